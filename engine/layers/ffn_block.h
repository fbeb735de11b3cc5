// The feed-forward half of a transformer block: out = x + FFN(RMSNorm(x)), where FFN is a dense
// SwiGLU (the first `first_dense_layers` layers) or a Mixture-of-Experts layer.
#pragma once

#include <memory>

#include "engine/layers/moe_layer.h"
#include "engine/layers/swiglu_mlp.h"

namespace sy {

class FfnBlock {
 public:
  FfnBlock(ParamStore& ps, const ModelConfig& cfg, int64_t layer, ExpertRange held_experts = {}, TpPlace tp = {});
  void allocate_buffers(Backend& be, DType dt);
  // out = x + ffn(norm(x)); returns the MoE layer's statistics (empty for a dense layer).
  MoeForwardStats forward(Backend& be, const Tensor& x, const Tensor& out);
  // dresid holds d(out); the branch's gradient w.r.t. x is added in place.
  void backward(Backend& be, const Tensor& x, const Tensor& dresid, double loss_scale);

  MoeLayer* moe() { return moe_.get(); }

 private:
  void ensure(Backend& be, int64_t n, DType dt);
  ParamStore& ps_;
  const ModelConfig& cfg_;
  int norm_;
  std::unique_ptr<SwiGluMlp> dense_;
  std::unique_ptr<MoeLayer> moe_;
  Tensor xn_, rstd_, dxn_;
};

}  // namespace sy
