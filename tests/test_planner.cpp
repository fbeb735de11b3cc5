// The planner on the full-size recipes (issue 12, points 3 and 4): the layouts published runs
// used are accepted as fitting, with the predictions printed beside what the reports give, and
// the fewest GPUs for Mixtral 8x7B at sequence 4096 on H100 80GB is at most 16 (a quarter of the
// 64 of Megatron-Core's reference), with the same figures for every family recipe.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "planner/layout_search.h"
#include "planner/plan_input.h"

namespace sy {
namespace {

PlanRequest request(const std::string& recipe, const std::string& gpu) {
  const GpuCatalog cat = load_gpu_catalog();
  PlanRequest r;
  r.recipe = load_plannable_recipe(std::string(SY_SOURCE_DIR) + "/" + recipe);
  r.gpu = cat.find(gpu);
  r.assume = cat.assume;
  r.seq = 4096;
  r.global_batch = 256;
  return r;
}

double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

// Megatron-Core's Mixtral 8x7B reference: 64 H100, TP1 EP8 PP4, sequence 4096; its MoE README
// reports 468 TFLOP/s per GPU in bf16 (47% of 989).
TEST(Planner, AcceptsMegatronCoresMixtralReferenceLayout) {
  PlanRequest req = request("recipes/mixtral/8x7b.toml", "h100");
  const PlanLayout l = parse_plan_layout("tp=1,pp=4,ep=8,zero=1", 64, req.global_batch);
  EXPECT_NO_THROW(check_engine_layout(req, l));
  const PlanRow row = plan_one(req, l);
  EXPECT_TRUE(row.fits) << gib(row.device_bytes) << " GiB";
  const double tflops = row.time.mfu * req.gpu.bf16_tflops;
  std::printf("[measured] Mixtral 8x7B on 64 H100 (TP1 EP8 PP4, dp16, 16 micro-batches of 1): predicted %.1f GiB per GPU, "
              "%.2f s per step, %.0f TFLOP/s per GPU (MFU %.1f%%); Megatron-Core reports 468 TFLOP/s (47.3%%)\n",
              gib(row.device_bytes), row.time.total_s, tflops, 100 * row.time.mfu);
  // Our engine recomputes under PP and does not overlap the gradient reduction: slower than
  // Megatron-Core's, but within a factor the model's terms explain (docs/planner.md).
  EXPECT_GT(tflops, 0.5 * 468);
  EXPECT_LT(tflops, 1.2 * 468);
}

// DeepSeek-V3 on 2048 H800 (arXiv:2412.19437, section 3.2): PP16, EP64 over 8 nodes, ZeRO-1
// data parallelism, no TP; sequence 4096, 15360 sequences per step at the end of the batch-size
// ramp; 180K H800 GPU-hours per trillion tokens (table 1), i.e. 1e12 / (180e3 * 3600) = 1543
// tokens/s per GPU. That run computes its GEMMs in FP8 (twice bf16's rate) and overlaps all of
// its communication (DualPipe); we predict a bf16 engine that recomputes under PP and overlaps
// nothing, so the prediction must be slower: between a quarter of the report and 1.2x it.
TEST(Planner, AcceptsDeepSeekV3ReportedLayout) {
  PlanRequest req = request("recipes/deepseek-v3/671b.toml", "h800");
  req.global_batch = 15360;
  const PlanLayout l = parse_plan_layout("tp=1,pp=16,ep=64,zero=1", 2048, req.global_batch);
  EXPECT_NO_THROW(check_engine_layout(req, l));
  const PlanRow row = plan_one(req, l);
  EXPECT_TRUE(row.fits) << gib(row.device_bytes) << " GiB";
  EXPECT_LE(row.device_bytes, req.gpu.memory_bytes());
  const double per_gpu = row.time.tokens_per_s / 2048, reported = 1e12 / (180e3 * 3600);
  std::printf("[measured] DeepSeek-V3 on 2048 H800 (TP1 PP16 EP64 ZeRO-1, dp128, 120 micro-batches of 1): predicted "
              "%.1f GiB per GPU, %.1f s per step, %.0f tokens/s per GPU (MFU %.1f%%); the report's 180K GPU-hours "
              "per trillion tokens is %.0f tokens/s per GPU; step = compute %.1f + EP %.1f + DP %.1f + PP %.1f + bubble %.1f s\n",
              gib(row.device_bytes), row.time.total_s, per_gpu, 100 * row.time.mfu, reported, row.time.compute_s,
              row.time.ep_s, row.time.dp_s, row.time.pp_s, row.time.bubble_s);
  EXPECT_GT(per_gpu, 0.25 * reported);
  EXPECT_LT(per_gpu, 1.2 * reported);
}

TEST(Planner, Mixtral8x7bAtSequence4096FitsOnSixteenH100) {
  const PlanRequest req = request("recipes/mixtral/8x7b.toml", "h100");
  const FewestGpus f = fewest_gpus(req);
  ASSERT_GT(f.world, 0);
  EXPECT_LE(f.world, 16);
  // Not fewer: the leanest layout on the next smaller count does not fit.
  const std::vector<PlanRow> below = plan_layouts(req, 8, true);
  ASSERT_FALSE(below.empty());
  EXPECT_FALSE(below.front().fits);
  ASSERT_FALSE(f.rows.empty());
  const PlanRow& best = f.rows.front();
  EXPECT_TRUE(best.fits);
  EXPECT_NO_THROW(check_engine_layout(req, best.layout));
  EXPECT_LE(best.device_bytes, req.gpu.memory_bytes());
  std::printf("[measured] Mixtral 8x7B, seq 4096, 256 sequences a step: fewest H100 80GB = %d, fastest there %s: %.1f GiB per "
              "GPU (%.1f held by our allocator), %.0f tokens/s per GPU, MFU %.1f%%\n",
              f.world, best.layout.text().c_str(), gib(best.device_bytes), gib(double(best.worst.total())),
              best.time.tokens_per_s / f.world, 100 * best.time.mfu);
}

// Every family recipe has a fewest-GPU answer on H100, and its fastest layout there is one the
// engine accepts; the figures go to the test log (and docs/planner.md).
TEST(Planner, EveryFamilyRecipeHasAFewestGpuLayout) {
  for (const char* recipe : {"recipes/mixtral/8x7b.toml", "recipes/mixtral/8x22b.toml", "recipes/qwen3-moe/30b-a3b.toml",
                             "recipes/qwen3-moe/235b-a22b.toml", "recipes/olmoe/1b-7b.toml",
                             "recipes/deepseek-v3/671b.toml", "recipes/gpt-oss/20b.toml", "recipes/gpt-oss/120b.toml"}) {
    const PlanRequest req = request(recipe, "h100");
    const FewestGpus f = fewest_gpus(req);
    ASSERT_GT(f.world, 0) << recipe;
    const PlanRow& best = f.rows.front();
    EXPECT_TRUE(best.fits) << recipe;
    EXPECT_NO_THROW(check_engine_layout(req, best.layout)) << recipe;
    std::printf("[measured] %s on H100: fewest %d GPUs, %s, %.1f GiB per GPU, %.0f tokens/s per GPU, MFU %.1f%%\n", recipe,
                f.world, best.layout.text().c_str(), gib(best.device_bytes), best.time.tokens_per_s / f.world,
                100 * best.time.mfu);
  }
}

// More memory per GPU never needs more GPUs, and the NVL72 domain admits what the 8-GPU nodes do.
TEST(Planner, FewestGpusFallsWithMemoryPerGpu) {
  const int h100 = fewest_gpus(request("recipes/mixtral/8x22b.toml", "h100")).world;
  const int h200 = fewest_gpus(request("recipes/mixtral/8x22b.toml", "h200")).world;
  const int b200 = fewest_gpus(request("recipes/mixtral/8x22b.toml", "b200")).world;
  EXPECT_GT(h100, 0);
  EXPECT_LT(h200, h100);
  EXPECT_LE(b200, h200);
}

}  // namespace
}  // namespace sy
