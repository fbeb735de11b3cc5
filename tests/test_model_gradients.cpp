// Whole-model backward against central finite differences in float64: every parameter of a
// 2-layer model with a dense layer, an MoE layer with a shared expert, GQA, aux and z losses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "engine/host_io.h"
#include "model_fixtures.h"

namespace sy {
namespace {

// Per parameter tensor: ||analytic - numeric|| / ||numeric||, the worst over all tensors.
double worst_relative_error(ModelConfig cfg, ExpertsImpl impl, double* checked = nullptr) {
  auto be = make_cpu_backend();
  Model model(cfg, *be, DType::F64, 11);
  model.set_experts_impl(impl);
  const HostBatch batch = testing::random_batch(2, cfg.seq_len, cfg.vocab_size, 5);
  be->fill(model.params().grads(), 0);
  model.forward_backward(batch, 1.0);
  const std::vector<double> analytic = download_f64(*be, model.params().grads());
  std::vector<double> values = download_f64(*be, model.params().values());
  const double h = 1e-5;
  double worst = 0;
  int64_t n_checked = 0;
  for (const ParamInfo& p : model.params().infos()) {
    double diff2 = 0, ref2 = 0;
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      const double keep = values[i];
      values[i] = keep + h;
      upload_f64(*be, values, model.params().values());
      const double up = model.forward(batch).total();
      values[i] = keep - h;
      upload_f64(*be, values, model.params().values());
      const double down = model.forward(batch).total();
      values[i] = keep;
      const double numeric = (up - down) / (2 * h);
      diff2 += (analytic[i] - numeric) * (analytic[i] - numeric);
      ref2 += numeric * numeric;
      ++n_checked;
    }
    upload_f64(*be, values, model.params().values());
    const double rel = std::sqrt(diff2) / std::max(std::sqrt(ref2), 1e-12);
    EXPECT_LE(rel, 1e-6) << p.name;
    EXPECT_GT(ref2, 0) << p.name << " has no gradient at all";
    worst = std::max(worst, rel);
  }
  if (checked) *checked = double(n_checked);
  return worst;
}

TEST(ModelGradients, WholeModelMatchesFiniteDifferencesDropless) {
  double n = 0;
  const double worst = worst_relative_error(testing::tiny_two_layer_config(), ExpertsImpl::Grouped, &n);
  EXPECT_GT(n, 2000);
  std::printf("[measured] worst per-tensor relative error vs finite differences %.3e over %.0f entries\n", worst, n);
}

TEST(ModelGradients, WholeModelMatchesFiniteDifferencesWithCapacityDrops) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.capacity_factor = 0.75;  // some assignments are dropped
  c.score_fn = ScoreFn::Sigmoid;
  c.tie_embeddings = true;
  worst_relative_error(c, ExpertsImpl::Grouped);
}

// QK-norm (model.qk_norm): per head (Qwen3) and over all heads (OLMoE); the q and k norm weights
// are checked with every other parameter.
TEST(ModelGradients, WholeModelWithQkNormMatchesFiniteDifferences) {
  for (const char* mode : {"head", "full"}) {
    ModelConfig c = testing::tiny_two_layer_config();
    c.qk_norm = mode;
    double n = 0;
    const double worst = worst_relative_error(c, ExpertsImpl::Grouped, &n);
    std::printf("[measured] qk_norm=%s: worst per-tensor relative error vs finite differences %.3e over %.0f entries\n",
                mode, worst, n);
  }
}

// DeepSeek-V3's routing: sigmoid scores, group-limited top-k (2 groups of 2, the best one) and a
// routed scaling factor of 2.5 on the combine weights.
TEST(ModelGradients, WholeModelWithGroupLimitedScaledRoutingMatchesFiniteDifferences) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.score_fn = ScoreFn::Sigmoid;
  c.n_expert_groups = 2;
  c.topk_groups = 1;
  c.routed_scaling_factor = 2.5;
  double n = 0;
  const double worst = worst_relative_error(c, ExpertsImpl::Grouped, &n);
  std::printf("[measured] group-limited routing x 2.5: worst per-tensor relative error %.3e over %.0f entries\n", worst, n);
}

// Multi-head Latent Attention (DeepSeek-V3), with and without the query latent: every latent,
// norm, up-projection and the shared rotary key.
TEST(ModelGradients, WholeModelWithMlaMatchesFiniteDifferences) {
  for (const int64_t q_rank : {int64_t(6), int64_t(0)}) {
    double n = 0;
    const double worst = worst_relative_error(testing::tiny_mla_config(q_rank), ExpertsImpl::Grouped, &n);
    std::printf("[measured] MLA q_lora_rank=%lld: worst per-tensor relative error %.3e over %.0f entries\n",
                (long long)q_rank, worst, n);
  }
}

// gpt-oss: sliding windows on every other layer, sinks, attention, router and expert biases, the
// clamped SwiGLU (a limit the hidden units cross) and YaRN, through both expert paths.
TEST(ModelGradients, WholeModelWithGptOssFeaturesMatchesFiniteDifferences) {
  for (const ExpertsImpl impl : {ExpertsImpl::Grouped, ExpertsImpl::Sequential}) {
    double n = 0;
    const double worst = worst_relative_error(testing::tiny_gpt_oss_config(), impl, &n);
    std::printf("[measured] GPT-OSS features (%s experts): worst per-tensor relative error %.3e over %.0f entries\n",
                impl == ExpertsImpl::Grouped ? "grouped" : "sequential", worst, n);
  }
}

TEST(ModelGradients, SequentialExpertsReferenceAgreesWithGrouped) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.capacity_factor = 1.0;
  auto be = make_cpu_backend();
  std::vector<double> grads[2];
  double loss[2];
  for (int i = 0; i < 2; ++i) {
    Model m(c, *be, DType::F64, 3);
    m.set_experts_impl(i == 0 ? ExpertsImpl::Grouped : ExpertsImpl::Sequential);
    be->fill(m.params().grads(), 0);
    loss[i] = m.forward_backward(testing::random_batch(3, c.seq_len, c.vocab_size, 9), 1.0).total();
    grads[i] = download_f64(*be, m.params().grads());
  }
  EXPECT_NEAR(loss[0], loss[1], 1e-13);
  for (size_t j = 0; j < grads[0].size(); ++j) ASSERT_NEAR(grads[0][j], grads[1][j], 1e-12) << j;
}

}  // namespace
}  // namespace sy
