// The attention half of a transformer block, whichever kind the model uses: out = x + Attn(RMSNorm(x)).
// Grouped-query attention (AttentionBlock) and Multi-head Latent Attention (MlaBlock) fill it;
// make_attention_layer picks one from the config.
#pragma once

#include <memory>

#include "engine/layers/tensor_parallel.h"
#include "engine/model_config.h"
#include "engine/params.h"

namespace sy {

// Inputs every attention layer shares: positions [N], the RoPE cos/sin tables
// [T, rope_dim / 2] (ModelConfig::rope_dim), and, with model.attention_bias, a column of N ones
// [N, 1] that adds a bias to every row as one GEMM (and sums the rows for its gradient).
struct AttentionInputs {
  Tensor positions, cos, sin, ones;
};

class AttentionLayer {
 public:
  virtual ~AttentionLayer() = default;
  // out = x + attn(norm(x)); x, out [B*T, D] (with sequence parallelism, this rank's B*T/tp rows).
  virtual void forward(Backend& be, const Tensor& x, const Tensor& out, const AttentionInputs& rope, int64_t batch,
                       int64_t seq) = 0;
  // dresid holds d(out) on entry; the branch's gradient w.r.t. x is added to it in place
  // (the identity path's gradient is already there).
  virtual void backward(Backend& be, const Tensor& x, const Tensor& dresid, const AttentionInputs& rope) = 0;
};

std::unique_ptr<AttentionLayer> make_attention_layer(ParamStore& ps, const ModelConfig& cfg, int64_t layer,
                                                     TpPlace tp);

}  // namespace sy
