// Multi-head Latent Attention (DeepSeek-V2/V3; docs/model.md, "Multi-head Latent Attention"):
// keys and values are rebuilt per head from one compressed latent per token, queries from another,
// and each head's q and k end in a rotary part, the key's shared by every head (the "decoupled"
// RoPE, which keeps position out of the latent so that the latent alone can be cached).
//
// Built from the backend's ops: the latents are GEMMs and RMSNorms, the per-head layouts are
// assembled with copy_columns, and attention runs with q/k head width qk_nope + qk_rope and value
// width v_head_dim. Under tensor parallelism each rank holds n_heads / tp heads (their q and kv
// up-projections and their rows of the output projection) and computes the two latents whole,
// sending back its heads' share of their gradient (summed over TP at the region entry).
#pragma once

#include "engine/layers/attention_layer.h"

namespace sy {

class MlaBlock : public AttentionLayer {
 public:
  MlaBlock(ParamStore& ps, const ModelConfig& cfg, int64_t layer, TpPlace tp = {});
  void forward(Backend& be, const Tensor& x, const Tensor& out, const AttentionInputs& rope, int64_t batch,
               int64_t seq) override;
  void backward(Backend& be, const Tensor& x, const Tensor& dresid, const AttentionInputs& rope) override;

 private:
  void ensure(Backend& be, int64_t batch, int64_t seq, int64_t local_rows, DType dt);
  // Rotates (or, backward, un-rotates the gradient of) the last qk_rope features of each row of
  // t viewed [rows * heads, qk]: copied out, rotated, copied back.
  void rope_tail(Backend& be, const Tensor& t, int64_t heads, const AttentionInputs& rope, bool backward);
  ParamStore& ps_;
  const ModelConfig& cfg_;
  TpPlace tp_;
  int64_t heads_, nope_, rope_, qk_, vd_, q_rank_, kv_rank_;
  Backend::AttentionOpts opts_;  // the layer's window and the (YaRN-adjusted) softmax scale
  int norm_, wo_, wkv_a_, kv_a_norm_, wkv_b_;
  int wq_ = -1;                      // q from the input (q_lora_rank = 0)
  int wq_a_ = -1, q_a_norm_ = -1, wq_b_ = -1;  // q through its latent
  // Saved for backward: the normed input and its rstd; the q latent before and after its norm;
  // the kv latent (before its norm), its rstd and the normed latent; q, k, v as attention read
  // them (rotated), its output and row lse.
  Tensor xn_, rstd_, cq_, rstd_q_, cqn_, ckv_, rstd_kv_, ckvn_, q_, k_, v_, o_, lse_;
  // Scratch: the kv projection [N, kv_rank + rope] and up-projection [N, H (nope + v)], the
  // rotary tails, and the gradients.
  Tensor kva_, kvb_, tail_, tail2_, do_, dq_, dk_, dv_, dkva_, dkvb_, dckvn_, dckv_, dcq_, dcqn_, dxn_;
};

}  // namespace sy
