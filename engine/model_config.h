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
