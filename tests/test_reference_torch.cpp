// The model against its PyTorch twin (tests/reference/moe_ref.py, float64, autograd): the same
// weights and batch give the same loss, logits, routing and every parameter gradient within
// 1e-5 relative — the way llm.c tests against its PyTorch reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "checkpoint/weights_io.h"
#include "engine/host_io.h"
#include "model_fixtures.h"

namespace sy {
namespace {

std::string config_json(const ModelConfig& c) {
  std::ostringstream o;
  o.precision(17);
  o << "{\"vocab_size\":" << c.vocab_size << ",\"d_model\":" << c.d_model << ",\"n_layers\":" << c.n_layers
    << ",\"n_heads\":" << c.n_heads << ",\"n_kv_heads\":" << c.n_kv_heads << ",\"head_dim\":" << c.resolved_head_dim()
    << ",\"rope_theta\":" << c.rope_theta << ",\"seq_len\":" << c.seq_len << ",\"norm_eps\":" << c.norm_eps
    << ",\"tie_embeddings\":" << (c.tie_embeddings ? "true" : "false") << ",\"d_ff\":" << c.d_ff
    << ",\"first_dense_layers\":" << c.first_dense_layers << ",\"n_experts\":" << c.n_experts
    << ",\"top_k\":" << c.top_k << ",\"expert_ffn_dim\":" << c.expert_ffn_dim
    << ",\"n_shared_experts\":" << c.n_shared_experts << ",\"score_fn\":\""
    << (c.score_fn == ScoreFn::Softmax ? "softmax" : "sigmoid") << "\",\"norm_topk_prob\":"
    << (c.norm_topk_prob ? "true" : "false") << ",\"capacity_factor\":" << c.capacity_factor
    << ",\"aux_loss_coef\":" << c.aux_loss_coef << ",\"z_loss_coef\":" << c.z_loss_coef << ",\"qk_norm\":\""
    << c.qk_norm << "\",\"q_lora_rank\":" << c.q_lora_rank << ",\"kv_lora_rank\":" << c.kv_lora_rank
    << ",\"qk_nope_head_dim\":" << c.qk_nope_head_dim << ",\"qk_rope_head_dim\":" << c.qk_rope_head_dim
    << ",\"v_head_dim\":" << c.v_head_dim << ",\"n_expert_groups\":" << c.n_expert_groups
    << ",\"topk_groups\":" << c.topk_groups << ",\"routed_scaling_factor\":" << c.routed_scaling_factor
    << ",\"sliding_window\":" << c.sliding_window << ",\"full_attention_every\":" << c.full_attention_every
    << ",\"attention_sinks\":" << (c.attention_sinks ? "true" : "false")
    << ",\"attention_bias\":" << (c.attention_bias ? "true" : "false") << ",\"rope_scaling\":\"" << c.rope_scaling
    << "\",\"rope_factor\":" << c.rope_factor << ",\"rope_original_max_position\":" << c.rope_original_max_position
    << ",\"yarn_beta_fast\":" << c.yarn_beta_fast << ",\"yarn_beta_slow\":" << c.yarn_beta_slow
    << ",\"yarn_truncate\":" << (c.yarn_truncate ? "true" : "false") << ",\"yarn_mscale\":" << c.yarn_mscale
    << ",\"yarn_mscale_all_dim\":" << c.yarn_mscale_all_dim
    << ",\"router_logit_bias\":" << (c.router_logit_bias ? "true" : "false")
    << ",\"expert_bias\":" << (c.expert_bias ? "true" : "false") << ",\"swiglu_limit\":" << c.swiglu_limit
    << ",\"swiglu_alpha\":" << c.swiglu_alpha << "}";
  return o.str();
}

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    r += b[i] * b[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(r), 1e-300);
}

void compare_with_torch(const ModelConfig& cfg, const std::string& tag) {
  const std::string script = std::string(SY_SOURCE_DIR) + "/tests/reference/moe_ref.py";
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("sy_torch_ref_" + tag);
  std::filesystem::create_directories(dir);
  const std::string in = (dir / "in.h5").string(), out = (dir / "out.h5").string();

  auto be = make_cpu_backend();
  Model model(cfg, *be, DType::F64, 21);
  if (cfg.router_bias_update_rate > 0) {
    // A non-zero balancing bias, so that selection and weights visibly differ.
    for (auto& [name, t] : model.buffers()) {
      std::vector<double> b(t.numel());
      for (size_t e = 0; e < b.size(); ++e) b[e] = 0.05 * double(e % 3);
      upload_f64(*be, b, t);
    }
  }
  // Biases start at zero; random ones make the forward pass depend on them.
  for (size_t i = 0; i < model.params().infos().size(); ++i) {
    const ParamInfo& p = model.params().infos()[i];
    if (p.kind != ParamKind::Bias) continue;
    std::vector<double> b(size_t(p.numel));
    for (size_t j = 0; j < b.size(); ++j) b[j] = 0.3 * std::sin(double(3 * j + i) + 0.5);
    upload_f64(*be, b, model.params().value(int(i)));
  }
  const HostBatch batch = testing::random_batch(2, cfg.seq_len, cfg.vocab_size, 13);
  std::vector<std::pair<std::string, HostArray>> arrays;
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i)
    arrays.emplace_back(ps.infos()[i].name, download_array(*be, ps.value(int(i))));
  for (auto& [name, t] : model.buffers()) arrays.emplace_back(name, download_array(*be, t));
  arrays.emplace_back("input_ids", host_array({batch.batch, batch.seq}, batch.inputs));
  arrays.emplace_back("targets", host_array({batch.batch, batch.seq}, batch.targets));
  write_weights_h5(in, arrays, {{"config", config_json(cfg)}});

  const std::string cmd = "/usr/bin/python3 " + script + " " + in + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << " failed: the PyTorch reference needs Debian's python3-torch "
                                         << "and python3-h5py (scripts/install-deps.sh installs them)";
  const auto ref = read_weights_h5(out);

  be->fill(model.params().grads(), 0);
  const LossParts parts = model.forward_backward(batch, 1.0);
  EXPECT_LE(std::abs(parts.total() - ref.at("loss").to_f64()[0]) / std::abs(ref.at("loss").to_f64()[0]), 1e-10);
  EXPECT_NEAR(parts.ce, ref.at("ce").to_f64()[0], 1e-10);
  EXPECT_NEAR(parts.aux, ref.at("aux").to_f64()[0], 1e-10);
  EXPECT_NEAR(parts.z, ref.at("z").to_f64()[0], 1e-10);
  EXPECT_LE(rel_err(download_f64(*be, model.logits()), ref.at("logits").to_f64()), 1e-10);

  // Routing: the same experts chosen and the same slots dropped.
  int moe_i = 0;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (!cfg.layer_is_moe(l)) continue;
    MoeLayer* m = model.moe_layers().at(moe_i++);
    const auto idx = download_f64(*be, m->last_topk_idx());
    EXPECT_EQ(idx, ref.at("route." + std::to_string(l) + ".idx").to_f64()) << "layer " << l;
    const auto kept_ref = ref.at("route." + std::to_string(l) + ".kept").to_f64();
    const auto& slots = m->last_plan().slot_rows;
    for (size_t s = 0; s < slots.size(); ++s) ASSERT_EQ(slots[s] >= 0, kept_ref[s] != 0) << "layer " << l << " slot " << s;
  }

  double worst = 0;
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const std::string& name = ps.infos()[i].name;
    const double e = rel_err(download_f64(*be, ps.grad(int(i))), ref.at("grad." + name).to_f64());
    EXPECT_LE(e, 1e-5) << name;
    worst = std::max(worst, e);
  }
  std::printf("[measured] %s: worst gradient relative error vs PyTorch %.3e\n", tag.c_str(), worst);
  std::filesystem::remove_all(dir);
}

TEST(ReferenceTorch, DenseThenMoeWithSharedExpertGqaAndCapacity) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.capacity_factor = 1.0;
  compare_with_torch(c, "softmax");
}

TEST(ReferenceTorch, SigmoidScoresTiedEmbeddingsBiasAndDropless) {
  ModelConfig c = testing::tiny_two_layer_config();
  c.first_dense_layers = 0;
  c.score_fn = ScoreFn::Sigmoid;
  c.tie_embeddings = true;
  c.router_bias_update_rate = 0.01;
  c.n_shared_experts = 2;
  compare_with_torch(c, "sigmoid");
}

TEST(ReferenceTorch, QkNormPerHeadAndFull) {
  for (const char* mode : {"head", "full"}) {
    ModelConfig c = testing::tiny_two_layer_config();
    c.qk_norm = mode;
    compare_with_torch(c, std::string("qknorm_") + mode);
  }
}

// DeepSeek-V3's attention and router: MLA with and without the query latent, sigmoid scores with
// group-limited top-k, a balancing bias, the routed scaling factor, a dense first layer and a
// shared expert.
TEST(ReferenceTorch, MlaWithGroupLimitedSigmoidRouting) {
  for (const int64_t q_rank : {int64_t(6), int64_t(0)}) {
    ModelConfig c = testing::tiny_mla_config(q_rank);
    c.score_fn = ScoreFn::Sigmoid;
    c.n_experts = 8;
    c.top_k = 3;
    c.n_expert_groups = 4;
    c.topk_groups = 2;
    c.routed_scaling_factor = 2.5;
    c.router_bias_update_rate = 0.01;
    compare_with_torch(c, "mla_q" + std::to_string(q_rank));
  }
}

// gpt-oss's features (testing::tiny_gpt_oss_config), and DeepSeek's YaRN with mscale on MLA.
TEST(ReferenceTorch, GptOssFeaturesAndYarn) {
  compare_with_torch(testing::tiny_gpt_oss_config(), "gpt_oss");
  ModelConfig m = testing::tiny_mla_config(6);
  m.rope_scaling = "yarn";
  m.rope_factor = 40;
  m.rope_original_max_position = 4;
  m.yarn_mscale = 1;
  m.yarn_mscale_all_dim = 1;
  compare_with_torch(m, "mla_yarn");
}

}  // namespace
}  // namespace sy
