// Grouped-query attention: out = x + Attn(RMSNorm(x)), with rotary embeddings on q and k.
// Under tensor parallelism each rank holds n_heads / tp query heads and n_kv_heads / tp KV heads (q, k, v column-parallel; the output
// projection, stored [heads * head_dim, D], row-parallel). GPT-OSS's options: a sliding window on
// some layers, a learned sink per head, biases on the projections (the output's added once,
// after the TP reduction).
#pragma once

#include "engine/layers/attention_layer.h"

namespace sy {

class AttentionBlock : public AttentionLayer {
 public:
  AttentionBlock(ParamStore& ps, const ModelConfig& cfg, int64_t layer, TpPlace tp = {});
  void forward(Backend& be, const Tensor& x, const Tensor& out, const AttentionInputs& rope, int64_t batch,
               int64_t seq) override;
  void backward(Backend& be, const Tensor& x, const Tensor& dresid, const AttentionInputs& rope) override;

 private:
  void ensure(Backend& be, int64_t batch, int64_t seq, int64_t local_rows, DType dt);
  ParamStore& ps_;
  const ModelConfig& cfg_;
  TpPlace tp_;
  int norm_, wq_, wk_, wv_, wo_;
  int q_norm_ = -1, k_norm_ = -1;  // model.qk_norm: RMSNorm weights of q and k (-1: none)
  int bq_ = -1, bk_ = -1, bv_ = -1, bo_ = -1;  // model.attention_bias (-1: none)
  int sinks_ = -1;                             // model.attention_sinks: a logit per local head
  Backend::AttentionOpts opts() const;  // window, scale and sinks of this layer
  int64_t window_;
  // q or k as rows the QK-norm normalises: [n * heads, head_dim] per head, [n, heads * head_dim] full.
  Tensor qk_rows(const Tensor& t, int64_t heads) const;
  int64_t heads_, kv_heads_, head_dim_;
  // Saved for backward: normed input, its rstd, rotated q and k, v, attention output, row lse;
  // with QK-norm also q and k as projected and their rows' rstd.
  Tensor xn_, rstd_, q_, k_, v_, o_, lse_, q_raw_, k_raw_, rstd_q_, rstd_k_;
  // Backward scratch.
  Tensor do_, dq_, dk_, dv_, dq_pre_, dk_pre_, dxn_, dq_raw_, dk_raw_;
};

}  // namespace sy
