// Small models and batches shared by the model-level tests.
#pragma once

#include <cstdint>

#include "engine/model.h"
#include "engine/rng.h"

namespace sy::testing {

// Two layers: a dense SwiGLU layer, then an MoE layer with a shared expert; GQA (4 heads, 2 KV).
inline ModelConfig tiny_two_layer_config() {
  ModelConfig c;
  c.vocab_size = 17;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.seq_len = 6;
  c.d_ff = 12;
  c.first_dense_layers = 1;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_ffn_dim = 8;
  c.n_shared_experts = 1;
  c.aux_loss_coef = 0.05;
  c.z_loss_coef = 0.01;
  c.init_std = 0.3;  // large enough that every path carries a visible gradient
  return c;
}

// DeepSeek-V3's attention on the tiny model: MLA with a query latent of q_rank (0: none), a kv
// latent of 5, q/k heads of 4 + 4 rotary features, values of 3.
inline ModelConfig tiny_mla_config(int64_t q_rank) {
  ModelConfig c = tiny_two_layer_config();
  c.n_kv_heads = c.n_heads;
  c.q_lora_rank = q_rank;
  c.kv_lora_rank = 5;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 3;
  return c;
}

// Every gpt-oss feature on the tiny model: sliding windows of 3 on every other layer, sinks,
// attention, router and expert biases, the clamped SwiGLU at a limit its hidden units cross,
// YaRN (untruncated ramp); every layer MoE, no shared expert.
inline ModelConfig tiny_gpt_oss_config() {
  ModelConfig c = tiny_two_layer_config();
  c.first_dense_layers = 0;
  c.n_shared_experts = 0;
  c.sliding_window = 3;
  c.full_attention_every = 2;
  c.attention_sinks = true;
  c.attention_bias = true;
  c.router_logit_bias = true;
  c.expert_bias = true;
  c.swiglu_limit = 0.5;
  c.swiglu_alpha = 1.702;
  c.rope_scaling = "yarn";
  c.rope_theta = 150000;
  c.rope_factor = 8;
  c.rope_original_max_position = 4;
  c.yarn_truncate = false;
  return c;
}

inline HostBatch random_batch(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  HostBatch b;
  b.batch = batch;
  b.seq = seq;
  Philox rng(seed, 77);
  for (int64_t i = 0; i < batch * seq; ++i) {
    b.inputs.push_back(int32_t(rng.below(vocab)));
    b.targets.push_back(int32_t(rng.below(vocab)));
  }
  return b;
}

}  // namespace sy::testing
