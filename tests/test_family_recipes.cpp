// The model-family recipes (recipes/<family>/<size>.toml, published hyperparameters) and their
// -mini twins (the same architecture at CPU size): every family recipe loads and validates; each
// -mini trains 5 steps at a layout that uses its features (experts spread by EP, TP or pipeline
// stages) and matches its 1-rank run with the same micro-batches, every loss and parameter within
// 1e-5 relative (float32). AdamW eps 1e-5 under TP, as test_tp_equivalence.cpp explains.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "config/recipe.h"
#include "equivalence_check.h"
#include "run_harness.h"

namespace sy {
namespace {

TEST(FamilyRecipes, EveryFamilyRecipeLoadsWithItsPublishedShapes) {
  int n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(SY_SOURCE_DIR "/recipes")) {
    if (e.path().extension() != ".toml" || e.path().parent_path() == SY_SOURCE_DIR "/recipes") continue;
    SCOPED_TRACE(e.path().string());
    const Recipe r = load_recipe(e.path().string());
    const bool mini = e.path().stem().string().ends_with("-mini");
    // A full recipe and its twin: same routing and attention features.
    const std::string twin = e.path().parent_path() / (e.path().stem().string() + (mini ? "" : "-mini") + ".toml");
    if (!mini) {
      ASSERT_TRUE(std::filesystem::exists(twin)) << "no -mini twin";
      const Recipe m = load_recipe(twin);
      EXPECT_EQ(m.model.qk_norm, r.model.qk_norm);
      EXPECT_EQ(m.model.score_fn, r.model.score_fn);
      EXPECT_EQ(m.model.norm_topk_prob, r.model.norm_topk_prob);
      EXPECT_EQ(m.model.n_shared_experts > 0, r.model.n_shared_experts > 0);
      EXPECT_EQ(m.model.head_dim > 0, r.model.head_dim > 0);
      EXPECT_EQ(m.model.n_heads / m.model.n_kv_heads == 1, r.model.n_heads / r.model.n_kv_heads == 1);
      EXPECT_EQ(m.model.aux_loss_coef, r.model.aux_loss_coef);
      EXPECT_EQ(m.model.z_loss_coef, r.model.z_loss_coef);
      EXPECT_EQ(m.model.rope_theta, r.model.rope_theta);
      EXPECT_EQ(m.model.mla(), r.model.mla());
      EXPECT_EQ(m.model.q_lora_rank > 0, r.model.q_lora_rank > 0);
      EXPECT_EQ(m.model.n_expert_groups > 1, r.model.n_expert_groups > 1);
      EXPECT_EQ(m.model.routed_scaling_factor, r.model.routed_scaling_factor);
      EXPECT_EQ(m.model.first_dense_layers > 0, r.model.first_dense_layers > 0);
      EXPECT_EQ(m.model.router_bias_update_rate > 0, r.model.router_bias_update_rate > 0);
      EXPECT_EQ(m.model.sliding_window > 0, r.model.sliding_window > 0);
      EXPECT_EQ(m.model.full_attention_every, r.model.full_attention_every);
      EXPECT_EQ(m.model.attention_sinks, r.model.attention_sinks);
      EXPECT_EQ(m.model.attention_bias, r.model.attention_bias);
      EXPECT_EQ(m.model.router_logit_bias, r.model.router_logit_bias);
      EXPECT_EQ(m.model.expert_bias, r.model.expert_bias);
      EXPECT_EQ(m.model.swiglu_limit, r.model.swiglu_limit);
      EXPECT_EQ(m.model.swiglu_alpha, r.model.swiglu_alpha);
      EXPECT_EQ(m.model.rope_scaling, r.model.rope_scaling);
      EXPECT_EQ(m.model.vocab_size, 256);
    }
    ++n;
  }
  EXPECT_GE(n, 10);
  // Spot checks against the released configs (cited in each file).
  const Recipe mixtral = load_recipe(SY_SOURCE_DIR "/recipes/mixtral/8x7b.toml");
  EXPECT_EQ(mixtral.model.d_model, 4096);
  EXPECT_EQ(mixtral.model.expert_ffn_dim, 14336);
  const Recipe qwen = load_recipe(SY_SOURCE_DIR "/recipes/qwen3-moe/235b-a22b.toml");
  EXPECT_EQ(qwen.model.n_layers, 94);
  EXPECT_EQ(qwen.model.head_dim, 128);
  const Recipe olmoe = load_recipe(SY_SOURCE_DIR "/recipes/olmoe/1b-7b.toml");
  EXPECT_EQ(olmoe.model.n_experts, 64);
  EXPECT_EQ(olmoe.model.qk_norm, "full");
  const Recipe dsv3 = load_recipe(SY_SOURCE_DIR "/recipes/deepseek-v3/671b.toml");
  EXPECT_EQ(dsv3.model.kv_lora_rank, 512);
  EXPECT_EQ(dsv3.model.qk_head_dim(), 192);
  EXPECT_EQ(dsv3.model.n_experts, 256);
  // The report's 37B activated parameters per token (671B total) include the embedding
  // (0.93B) and exclude MTP; ours counts the LM head instead of the embedding: the same size.
  EXPECT_NEAR(double(dsv3.model.active_params_per_token()) / 1e9, 37.0, 1.0);
  // The model card's active parameters: 3.6B (20b) and 5.1B (120b) per token, which count the
  // unembedding (our LM head, 0.58B) and not the embedding.
  const Recipe oss20 = load_recipe(SY_SOURCE_DIR "/recipes/gpt-oss/20b.toml");
  const Recipe oss120 = load_recipe(SY_SOURCE_DIR "/recipes/gpt-oss/120b.toml");
  EXPECT_EQ(oss20.model.layer_window(0), 128);
  EXPECT_EQ(oss20.model.layer_window(1), 0);
  EXPECT_NEAR(double(oss20.model.active_params_per_token()) / 1e9, 3.6, 0.15);
  EXPECT_NEAR(double(oss120.model.active_params_per_token()) / 1e9, 5.1, 0.15);
}

struct MiniLayout {
  const char* recipe;
  int ranks, micro;     // micro-batches per pipeline (grad_accum of the parallel run)
  int dp;               // data-parallel replicas
  const char* layout;   // --set parallel.*
  bool tp;
};

void check_mini(const MiniLayout& m, const std::string& tag) {
  testing::RunDir d(tag);
  const std::string base = " --set train.steps=5 --set train.micro_batch=2 --set train.log_every=1"
                           " --set train.eval_every=0 --set train.eval_batches=1 --set train.max_minutes=0" +
                           std::string(m.tp ? " --set optim.eps=1e-5" : "");
  auto r = d.train("ref", 0, base + " --set train.grad_accum=" + std::to_string(m.micro * m.dp), "", m.recipe);
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train("run", m.ranks, base + " --set train.grad_accum=" + std::to_string(m.micro) + m.layout, "", m.recipe);
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_same_run(d, "ref", "run", 5);
  EXPECT_EQ(d.field("run", "expert_tokens"), d.field("ref", "expert_tokens"));
}

TEST(FamilyRecipes, Mixtral8x7bMiniAtTp2Dp2Ep2) {
  check_mini({"recipes/mixtral/8x7b-mini.toml", 4, 1, 2, " --set parallel.tp=2 --set parallel.ep=2", true}, "fam_mx7");
}
TEST(FamilyRecipes, Mixtral8x22bMiniAtTp2Pp2) {
  check_mini({"recipes/mixtral/8x22b-mini.toml", 4, 4, 1, " --set parallel.tp=2 --set parallel.pp=2", true}, "fam_mx22");
}
TEST(FamilyRecipes, Qwen3Moe30bMiniAtPp2Dp2Ep2) {
  check_mini({"recipes/qwen3-moe/30b-a3b-mini.toml", 4, 2, 2, " --set parallel.pp=2 --set parallel.ep=2", false},
             "fam_q30");
}
TEST(FamilyRecipes, Qwen3Moe235bMiniAtTp2Pp2Dp2Ep2) {
  check_mini({"recipes/qwen3-moe/235b-a22b-mini.toml", 8, 2, 2,
              " --set parallel.tp=2 --set parallel.pp=2 --set parallel.ep=2 --set parallel.sp=true", true},
             "fam_q235");
}
TEST(FamilyRecipes, DeepSeekV3MiniAtPp2Dp2Ep2) {
  check_mini({"recipes/deepseek-v3/671b-mini.toml", 4, 2, 2, " --set parallel.pp=2 --set parallel.ep=2", false},
             "fam_dsv3");
}
// MLA's heads split over TP with sequence parallelism: the latents computed whole on each rank.
TEST(FamilyRecipes, DeepSeekV3MiniAtTp2SpDp2Ep2) {
  check_mini({"recipes/deepseek-v3/671b-mini.toml", 4, 1, 2,
              " --set parallel.tp=2 --set parallel.sp=true --set parallel.ep=2", true},
             "fam_dsv3_tp");
}
TEST(FamilyRecipes, GptOss20bMiniAtTp2Dp2Ep2) {
  check_mini({"recipes/gpt-oss/20b-mini.toml", 4, 1, 2, " --set parallel.tp=2 --set parallel.ep=2", true}, "fam_oss20");
}
TEST(FamilyRecipes, GptOss120bMiniAtPp2Dp2Ep2) {
  check_mini({"recipes/gpt-oss/120b-mini.toml", 4, 2, 2, " --set parallel.pp=2 --set parallel.ep=2", false},
             "fam_oss120");
}
TEST(FamilyRecipes, Olmoe1b7bMiniAtPp2Dp2Ep2) {
  check_mini({"recipes/olmoe/1b-7b-mini.toml", 4, 2, 2, " --set parallel.pp=2 --set parallel.ep=2", false}, "fam_olmoe");
}

}  // namespace
}  // namespace sy
