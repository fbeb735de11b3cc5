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
