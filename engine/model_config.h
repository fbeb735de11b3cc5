// The model's sizes and MoE options: one struct, read from a recipe's [model] section.
// docs/model.md writes out the math each field controls.
#pragma once

#include <cstdint>
#include <string>

#include "engine/backend.h"

namespace sy {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t d_model = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 8;
  int64_t n_kv_heads = 4;
  int64_t head_dim = 0;  // 0: d_model / n_heads
  double rope_theta = 10000.0;
  int64_t seq_len = 256;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;
  // RMSNorm on the queries and keys after their projections, before RoPE: "none"; "head" over
  // each head's head_dim features with one weight per feature shared by the heads (Qwen3);
  // "full" over all of a token's q (n_heads * head_dim) and all of its k (n_kv_heads * head_dim),
  // one weight per feature (OLMoE). docs/model.md.
  std::string qk_norm = "none";
  // Multi-head Latent Attention (DeepSeek-V2/V3) when kv_lora_rank > 0: keys and values come up
  // from a kv_lora_rank-wide compressed latent (and queries from a q_lora_rank-wide one; 0: from
  // the input directly); each head's q and k are qk_nope_head_dim features without position plus
  // qk_rope_head_dim rotary ones (the rotary key part shared by all heads); values are
  // v_head_dim wide. head_dim and n_kv_heads do not apply (n_kv_heads must equal n_heads).
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // GPT-OSS's attention: a sliding window of `sliding_window` keys (0: none) on every layer but
  // each full_attention_every-th (layer l is full when (l + 1) % full_attention_every == 0; 0:
  // every layer slides); a learned sink logit per head (`attention_sinks`); biases on q, k, v
  // and the output projection (`attention_bias`).
  int64_t sliding_window = 0;
  int64_t full_attention_every = 0;
  bool attention_sinks = false;
  bool attention_bias = false;
  // RoPE frequency scaling: "none" or "yarn" (YaRN, as Hugging Face's rope_parameters define it:
  // rope_factor, the pre-training context rope_original_max_position, the ramp's yarn_beta_fast
  // and yarn_beta_slow, whether the ramp's ends are rounded (yarn_truncate), and DeepSeek's
  // yarn_mscale / yarn_mscale_all_dim, 0 when absent). docs/model.md has the formulas.
  std::string rope_scaling = "none";
  double rope_factor = 1.0;
  int64_t rope_original_max_position = 0;
  double yarn_beta_fast = 32.0, yarn_beta_slow = 1.0;
  bool yarn_truncate = true;
  double yarn_mscale = 0.0, yarn_mscale_all_dim = 0.0;

  // FFN: dense SwiGLU of width d_ff for the first `first_dense_layers` layers, MoE after.
  int64_t d_ff = 1024;
  int64_t first_dense_layers = 0;
  int64_t n_experts = 8;  // 0: every layer dense
  int64_t top_k = 2;
  int64_t expert_ffn_dim = 512;
  int64_t n_shared_experts = 0;  // each of width expert_ffn_dim
  ScoreFn score_fn = ScoreFn::Softmax;
  bool norm_topk_prob = true;
  // Group-limited routing and the routed scaling factor (DeepSeek-V3: 8 groups, top 4, 2.5): the
  // experts in n_expert_groups equal groups, each token choosing among the topk_groups best
  // groups' experts (RouterGroups, engine/backend.h); the routed experts' combine weights
  // multiplied by routed_scaling_factor. 1, 1, 1.0: off.
  int64_t n_expert_groups = 1;
  int64_t topk_groups = 1;
  double routed_scaling_factor = 1.0;
  // GPT-OSS's MoE: a learned bias on the router logits (`router_logit_bias`; not the
  // aux-loss-free balancing bias), biases on every routed expert's gate|up and down projections
  // (`expert_bias`), and the clamped SwiGLU on every SwiGLU of the model when swiglu_limit > 0
  // (Backend::GluOpts: alpha swiglu_alpha, limit swiglu_limit).
  bool router_logit_bias = false;
  bool expert_bias = false;
  double swiglu_limit = 0.0;
  double swiglu_alpha = 1.0;
  double capacity_factor = 0.0;  // 0: dropless
  double aux_loss_coef = 0.01;
  double z_loss_coef = 0.001;
  double router_bias_update_rate = 0.0;  // aux-loss-free balancing (DeepSeek-V3); 0 = off

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : d_model / n_heads; }
  bool mla() const { return kv_lora_rank > 0; }
  // The widths attention works in: q and k per head, v (and the output) per head, and the part
  // RoPE rotates (the RoPE tables' 2 * columns).
  int64_t qk_head_dim() const { return mla() ? qk_nope_head_dim + qk_rope_head_dim : resolved_head_dim(); }
  int64_t v_dim() const { return mla() ? v_head_dim : resolved_head_dim(); }
  int64_t rope_dim() const { return mla() ? qk_rope_head_dim : resolved_head_dim(); }
  // The sliding window of layer l (0: full causal attention).
  int64_t layer_window(int64_t l) const {
    const bool full = full_attention_every > 0 && (l + 1) % full_attention_every == 0;
    return sliding_window > 0 && !full ? sliding_window : 0;
  }
  // RoPE: the inverse frequency of rotary pair i < rope_dim / 2 (YaRN-blended when on), the
  // factor cos and sin are multiplied by, and the attention's softmax scale.
  double rope_inv_freq(int64_t i) const;
  double rope_amplitude() const;
  double attention_scale() const;
  Backend::GluOpts glu() const { return {swiglu_limit > 0 ? swiglu_alpha : 1.0, swiglu_limit}; }
  bool layer_is_moe(int64_t layer) const { return n_experts > 0 && layer >= first_dense_layers; }
  // Parameters one token multiplies by (attention, router, top_k + shared experts, dense FFNs,
  // LM head; not the embedding lookup or norms), and the training FLOPs per token:
  // 6 * active + 6 * n_layers * n_heads * (qk_head_dim + v_dim) * seq_len (docs/model.md).
  int64_t active_params_per_token() const;
  double train_flops_per_token() const;
  // Throws ConfigError naming the offending key and the fix.
  void validate() const;
};

}  // namespace sy
