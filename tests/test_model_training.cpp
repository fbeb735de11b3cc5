// Model-level behaviour: the loss at initialisation, bitwise reproducibility, and learning.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/host_io.h"
#include "model_fixtures.h"
#include "optim/optimizer.h"

namespace sy {
namespace {

// The default recipe's architecture (recipes/tiny-moe.toml) at a shorter sequence.
ModelConfig tiny_moe_like() {
  ModelConfig c;
  c.vocab_size = 256;
  c.d_model = 256;
  c.n_layers = 4;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.seq_len = 64;
  c.n_experts = 8;
  c.top_k = 2;
  c.expert_ffn_dim = 512;
  return c;
}

TEST(ModelTraining, InitialLossOnRandomTokensIsLnVocab) {
  const ModelConfig c = tiny_moe_like();
  auto be = make_cpu_backend();
  Model m(c, *be, DType::F32, 1234);
  const double ce = m.forward(testing::random_batch(4, c.seq_len, c.vocab_size, 1)).ce;
  EXPECT_NEAR(ce, std::log(256.0), 0.02 * std::log(256.0));
}

std::vector<double> train_losses(const ModelConfig& c, int steps, uint64_t seed, const std::string& optimizer) {
  auto be = make_cpu_backend();
  Model m(c, *be, DType::F32, seed);
  OptimConfig oc;
  oc.name = optimizer;
  oc.lr = optimizer == "sgd" ? 0.5 : 3e-3;
  oc.warmup_steps = 5;
  Optimizer opt(oc, m.params(), *be, steps);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    be->fill(m.params().grads(), 0);
    // A learnable pattern: the next token is the current one plus one.
    HostBatch b = testing::random_batch(2, c.seq_len, c.vocab_size, seed * 1000 + s);
    for (size_t i = 0; i < b.inputs.size(); ++i) b.targets[i] = (b.inputs[i] + 1) % int32_t(c.vocab_size);
    losses.push_back(m.forward_backward(b, 1.0).total());
    opt.step();
    m.update_router_biases();
  }
  return losses;
}

TEST(ModelTraining, SameSeedGivesBitwiseIdenticalLossesOver50Steps) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.vocab_size = 32;
  c.d_model = 32;
  c.seq_len = 16;
  c.capacity_factor = 1.0;
  c.router_bias_update_rate = 1e-3;
  c.init_std = 0.02;
  const auto a = train_losses(c, 50, 7, "adamw"), b = train_losses(c, 50, 7, "adamw");
  for (int i = 0; i < 50; ++i) ASSERT_EQ(a[i], b[i]) << "step " << i;
  const auto other = train_losses(c, 50, 8, "adamw");
  EXPECT_NE(a[0], other[0]);  // the seed matters
  EXPECT_LT(a.back(), 0.5 * a.front());  // and the model learns the pattern
}

TEST(ModelTraining, RouterBiasMovesTowardBalanceWithoutChangingWeights) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.router_bias_update_rate = 0.01;
  auto be = make_cpu_backend();
  Model m(c, *be, DType::F64, 2);
  m.forward(testing::random_batch(4, c.seq_len, c.vocab_size, 3));
  MoeLayer* moe = m.moe_layers().at(0);
  const std::vector<int64_t> load = moe->pending_load();
  m.update_router_biases();
  const std::vector<double> bias = download_f64(*be, moe->bias());
  double mean = 0;
  for (int64_t l : load) mean += double(l) / double(load.size());
  for (size_t e = 0; e < load.size(); ++e) {
    const double want = load[e] < mean ? 0.01 : (load[e] > mean ? -0.01 : 0.0);
    EXPECT_DOUBLE_EQ(bias[e], want) << "expert " << e;
  }
}

}  // namespace
}  // namespace sy
