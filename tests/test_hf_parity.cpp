// Parity with Hugging Face's own implementation: tests/fixtures/hf/<family>/ holds a tiny random
// model made by transformers' classes (model.safetensors + config.json as save_pretrained writes
// them), the logits transformers computes for a batch of ids (expected.safetensors) and a recipe of
// the same architecture; scripts/hf-fixtures.sh makes them (tests/fixtures/hf/README.md). Each
// family's directory goes through what `switchyard import` does (every *.safetensors file read,
// renamed and transposed by trainer/hf_interop, a weights file written) and what
// train.init_weights does (the weights file loaded into the recipe's model), then the engine's CPU
// forward pass, in float32 and in float64, must give Hugging Face's logits within 1e-4.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "checkpoint/safetensors.h"
#include "config/recipe.h"
#include "engine/host_io.h"
#include "trainer/hf_interop.h"
#include "trainer/weights_file.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

constexpr double kTolerance = 1e-4;  // max abs over every logit

struct Fixture {
  Recipe recipe;
  std::string weights;  // the imported weights file
  HostBatch batch;
  std::vector<double> logits;  // Hugging Face's, [B * T, V]
};

// The fixture as `switchyard import RECIPE --from-hf DIR --out FILE` would turn it into a weights
// file (the family from the recipe's qk_norm, as the command does without --family).
Fixture import_fixture(const std::string& family, const fs::path& tmp) {
  const fs::path dir = fs::path(SY_SOURCE_DIR) / "tests" / "fixtures" / "hf" / family;
  Fixture f;
  f.recipe = load_recipe((dir / "recipe.toml").string());
  EXPECT_EQ(hf_family(f.recipe.model, ""), family);
  const auto arrays = import_hf(f.recipe.model, hf_family(f.recipe.model, ""), read_safetensors_dir(dir.string()));
  f.weights = (tmp / (family + ".h5")).string();
  write_weights_h5(f.weights, arrays, {{"recipe", f.recipe.resolved_toml}, {"imported_from", dir.string()}});

  const auto expected = read_safetensors((dir / "expected.safetensors").string());
  const HostArray& ids = expected.at("input_ids");
  const HostArray& logits = expected.at("logits");
  EXPECT_EQ(ids.dtype, DType::I32);
  EXPECT_EQ(logits.dtype, DType::F32);
  if (ids.shape.size() != 2 || logits.shape != Shape{ids.shape[0], ids.shape[1], f.recipe.model.vocab_size})
    throw std::runtime_error(family + ": expected.safetensors has input_ids " + shape_str(ids.shape) + " and logits " +
                             shape_str(logits.shape) + "; the recipe's vocabulary is " +
                             std::to_string(f.recipe.model.vocab_size));
  f.batch.batch = ids.shape[0];
  f.batch.seq = ids.shape[1];
  f.batch.inputs = ids.values<int32_t>();
  f.batch.targets.assign(f.batch.inputs.size(), 0);  // the loss is not compared
  f.logits = logits.to_f64();
  return f;
}

// The engine's logits for the fixture's ids, on the CPU backend in `dtype`.
std::vector<double> engine_logits(const Fixture& f, DType dtype) {
  auto be = make_cpu_backend();
  Model model(f.recipe.model, *be, dtype, 1);  // the seed's initialisation is overwritten
  load_weights(model, f.weights);
  model.forward(f.batch);
  return download_f64(*be, model.logits());
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

void check_family(const std::string& family) {
  const fs::path tmp = fs::temp_directory_path() / ("sy_hf_parity_" + std::to_string(getpid()) + "_" + family);
  fs::create_directories(tmp);
  const Fixture f = import_fixture(family, tmp);
  double scale = 0;
  for (double v : f.logits) scale = std::max(scale, std::abs(v));
  for (DType dtype : {DType::F32, DType::F64}) {
    const std::vector<double> ours = engine_logits(f, dtype);
    ASSERT_EQ(ours.size(), f.logits.size()) << family;
    const double err = max_abs_diff(ours, f.logits);
    std::printf("[measured] %s %s: max abs logit error vs Hugging Face %.3e (largest |logit| %.2f)\n", family.c_str(),
                dtype_name(dtype), err, scale);
    EXPECT_LE(err, kTolerance) << family << " in " << dtype_name(dtype);
  }
  fs::remove_all(tmp);
}

TEST(HfParity, MixtralMatchesTransformers) { check_family("mixtral"); }
TEST(HfParity, Qwen3MoeMatchesTransformers) { check_family("qwen3_moe"); }
TEST(HfParity, OlmoeMatchesTransformers) { check_family("olmoe"); }
// MLA with the query latent, interleaved RoPE and YaRN with mscale; sigmoid group-limited routing
// with e_score_correction_bias and the routed scaling; a dense first layer; two shared experts
// stored as one MLP.
TEST(HfParity, DeepSeekV3MatchesTransformers) { check_family("deepseek_v3"); }
// Sliding and full layers, sinks, q/k/v/o biases, the router's logit bias, fused experts with
// interleaved gate|up and biases, the clamped SwiGLU, YaRN.
TEST(HfParity, GptOssMatchesTransformers) { check_family("gpt_oss"); }

}  // namespace
}  // namespace sy
