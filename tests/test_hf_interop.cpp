// Hugging Face interop (trainer/hf_interop.h, checkpoint/safetensors.h, `switchyard import` /
// `export`, train.init_weights): the safetensors layout byte for byte, an export then import that
// gives back every parameter bit for bit, the attention output projection transposed between the
// two conventions, and imported weights that train the same at one rank and at tp2 x pp2.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/safetensors.h"
#include "config/recipe.h"
#include "engine/host_io.h"
#include "engine/model.h"
#include "trainer/hf_interop.h"
#include "equivalence_check.h"
#include "run_harness.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

TEST(Safetensors, LayoutRoundTripAndDamage) {
  testing::RunDir d("safetensors");
  const std::string path = (d.path() / "x.safetensors").string();
  HostArray bf;
  bf.shape = {3};
  bf.dtype = DType::BF16;
  for (uint16_t v : {uint16_t(0x3f80), uint16_t(0xc000), uint16_t(0x7fff)})
    bf.bytes.push_back(std::byte(v & 0xff)), bf.bytes.push_back(std::byte(v >> 8));
  const std::vector<std::pair<std::string, HostArray>> arrays = {
      {"a.weight", host_array({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6})}, {"b", bf},
      {"c", host_array({1}, std::vector<int32_t>{-7})}};
  write_safetensors(path, arrays, {{"format", "pt"}});
  const std::string raw = d.file("x.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // the data starts aligned
  EXPECT_EQ(raw.size(), 8 + n + 24 + 6 + 4);
  EXPECT_EQ(raw.substr(8, 1), "{");
  EXPECT_NE(raw.find("\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"), std::string::npos);
  EXPECT_NE(raw.find("\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[24,30]}"), std::string::npos);
  EXPECT_NE(raw.find("\"__metadata__\":{\"format\":\"pt\"}"), std::string::npos);
  const auto back = read_safetensors(path);
  ASSERT_EQ(back.size(), 3u);
  for (const auto& [name, a] : arrays) {
    EXPECT_EQ(back.at(name).shape, a.shape) << name;
    EXPECT_EQ(back.at(name).dtype, a.dtype) << name;
    EXPECT_TRUE(back.at(name).bytes == a.bytes) << name;
  }
  std::ofstream((d.path() / "t.safetensors").string(), std::ios::binary) << raw.substr(0, raw.size() - 5);
  try {
    read_safetensors((d.path() / "t.safetensors").string());
    ADD_FAILURE() << "truncated file read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("do not hold its"), std::string::npos) << e.what();
  }
}

struct Sh {
  int code;
  std::string out;
};
Sh sh(const testing::RunDir& d, const std::string& args) {
  const std::string log = (d.path() / "cmd.log").string();
  const int st = std::system(("cd '" + d.path().string() + "' && '" SY_BINARY_DIR "/switchyard' " + args + " > '" + log +
                              "' 2>&1").c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, testing::slurp(log)};
}

const char* kQwenMini = "recipes/qwen3-moe/30b-a3b-mini.toml";

TEST(HfInterop, ExportThenImportGivesBackEveryParameterBitForBit) {
  testing::RunDir d("hf_roundtrip");
  const std::string recipe = std::string(SY_SOURCE_DIR) + "/" + kQwenMini;
  ASSERT_EQ(d.train("run", 0, " --set train.steps=2 --set train.eval_every=0 --set train.eval_batches=1", "", kQwenMini).code, 0);
  auto r = sh(d, "export '" + recipe + "' --weights run/weights.h5 --to-hf hf");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(d.path() / "hf" / "config.json"));
  const auto hf = read_safetensors((d.path() / "hf" / "model.safetensors").string());
  EXPECT_TRUE(hf.count("model.layers.0.self_attn.q_norm.weight"));
  EXPECT_TRUE(hf.count("model.layers.3.mlp.experts.15.down_proj.weight"));
  EXPECT_TRUE(hf.count("model.embed_tokens.weight"));
  // The output projection: Hugging Face [D, H*hd] = Switchyard's [H*hd, D] transposed.
  const auto ours = d.weights("run");
  const HostArray &wo = ours.at("layers.1.attn.wo"), &o = hf.at("model.layers.1.self_attn.o_proj.weight");
  ASSERT_EQ(o.shape, (Shape{wo.shape[1], wo.shape[0]}));
  const auto a = wo.values<float>(), b = o.values<float>();
  for (int64_t i = 0; i < wo.shape[0]; ++i)
    for (int64_t j = 0; j < wo.shape[1]; ++j) ASSERT_EQ(a[i * wo.shape[1] + j], b[j * wo.shape[0] + i]);
  // Every down projection likewise: Hugging Face [D, F], Switchyard [F, D].
  const HostArray &w2 = ours.at("layers.2.moe.experts.3.w2"), &down = hf.at("model.layers.2.mlp.experts.3.down_proj.weight");
  ASSERT_EQ(down.shape, (Shape{64, 32}));
  ASSERT_EQ(w2.shape, (Shape{32, 64}));
  const auto c = w2.values<float>(), e = down.values<float>();
  for (int64_t i = 0; i < 32; ++i)
    for (int64_t j = 0; j < 64; ++j) ASSERT_EQ(c[i * 64 + j], e[j * 32 + i]);
  r = sh(d, "import '" + recipe + "' --from-hf hf --out back.h5");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto back = read_weights_h5((d.path() / "back.h5").string());
  int params = 0;
  for (const auto& [name, arr] : ours) {
    ASSERT_TRUE(back.count(name)) << name;
    if (name.ends_with(".router.bias")) continue;  // a buffer Hugging Face has no tensor for: zero
    EXPECT_TRUE(back.at(name).bytes == arr.bytes) << name;
    ++params;
  }
  EXPECT_GT(params, 100);
  // Bad input: one line each.
  r = sh(d, "import '" + recipe + "' --from-hf nowhere --out x.h5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("nowhere: cannot list"), std::string::npos) << r.out;
  r = sh(d, "import '" + std::string(SY_SOURCE_DIR) + "/recipes/mixtral/8x7b-mini.toml' --from-hf hf --out x.h5");
  EXPECT_EQ(r.code, 2) << r.out;
  // Another architecture's recipe: its first tensor of another shape is named, with the fix.
  EXPECT_NE(r.out.find("model.layers.0.self_attn.q_proj.weight has shape [128, 64], the recipe's layers.0.attn.wq needs "
                       "[64, 64]; use the recipe of the checkpoint's model"),
            std::string::npos)
      << r.out;
  r = sh(d, "export '" + recipe + "' --weights run/weights.h5 --to-hf hf2 --family llama");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--family llama is not one of mixtral, qwen3_moe, olmoe"), std::string::npos) << r.out;
}

// The families whose tensors are not one-to-one with ours: DeepSeek-V3 (interleaved rotary rows,
// shared experts as one MLP, the balancing bias as e_score_correction_bias) and gpt-oss (fused
// experts with gate and up interleaved, biases). Export then import gives every array back bit
// for bit, and spot elements sit where transformers reads them.
TEST(HfInterop, DeepSeekV3AndGptOssRoundTripBitForBit) {
  for (const char* recipe : {"recipes/deepseek-v3/671b-mini.toml", "recipes/gpt-oss/20b-mini.toml"}) {
    SCOPED_TRACE(recipe);
    const ModelConfig cfg = load_recipe(std::string(SY_SOURCE_DIR) + "/" + recipe).model;
    const std::string family = hf_family(cfg, "");
    auto be = make_cpu_backend();
    Model model(cfg, *be, DType::F32, 7);
    std::map<std::string, HostArray> ours;
    for (size_t i = 0; i < model.params().infos().size(); ++i) {
      const ParamInfo& p = model.params().infos()[i];
      std::vector<double> v = download_f64(*be, model.params().value(int(i)));
      if (p.kind == ParamKind::Bias)  // biases start at zero: give them values to move
        for (size_t j = 0; j < v.size(); ++j) v[j] = 0.01 * double(j % 17) - 0.05;
      ours.emplace(p.name, host_array(p.global_shape, std::vector<float>(v.begin(), v.end())));
    }
    for (auto& [name, t] : model.buffers()) {
      std::vector<float> v(size_t(t.numel()));
      for (size_t j = 0; j < v.size(); ++j) v[j] = 0.02f * float(j % 5);
      ours.emplace(name, host_array(t.shape(), v));
    }
    const auto exported = export_hf(cfg, family, ours);
    std::map<std::string, HostArray> hf(exported.begin(), exported.end());
    const auto back = import_hf(cfg, family, hf);
    ASSERT_EQ(back.size(), ours.size());
    for (const auto& [name, arr] : back) {
      if (family == "gpt_oss" && name.ends_with(".router.bias")) continue;  // no such tensor there: zero
      EXPECT_TRUE(arr.bytes == ours.at(name).bytes) << name;
    }
    auto at = [](const HostArray& a, int64_t i) { return a.values<float>()[size_t(i)]; };
    if (family == "deepseek_v3") {
      // Head 1's rotary pair 2 of q: ours row nope + 2 (halves), theirs nope + 4 (interleaved).
      const int64_t qk = cfg.qk_head_dim(), row = qk + cfg.qk_nope_head_dim, cols = cfg.q_lora_rank;
      const HostArray &mine = ours.at("layers.1.attn.wq_b"), &theirs = hf.at("model.layers.1.self_attn.q_b_proj.weight");
      EXPECT_EQ(at(mine, (row + 2) * cols + 3), at(theirs, (row + 4) * cols + 3));
      EXPECT_EQ(at(mine, (row + cfg.qk_rope_head_dim / 2 + 2) * cols + 3), at(theirs, (row + 5) * cols + 3));
      EXPECT_TRUE(hf.at("model.layers.1.mlp.gate.e_score_correction_bias").bytes == ours.at("layers.1.moe.router.bias").bytes);
      EXPECT_EQ(hf.at("model.layers.1.mlp.shared_experts.gate_proj.weight").shape,
                (Shape{cfg.n_shared_experts * cfg.expert_ffn_dim, cfg.d_model}));
    } else {
      // Expert 5's gate unit 3 at input 7 is column 6 of row 7 of their fused block; up is column 7.
      const int64_t f = cfg.expert_ffn_dim, d = cfg.d_model;
      const HostArray& fused = hf.at("model.layers.2.mlp.experts.gate_up_proj");
      ASSERT_EQ(fused.shape, (Shape{cfg.n_experts, d, 2 * f}));
      EXPECT_EQ(at(ours.at("layers.2.moe.experts.5.w1"), 3 * d + 7), at(fused, (5 * d + 7) * 2 * f + 6));
      EXPECT_EQ(at(ours.at("layers.2.moe.experts.5.w3"), 3 * d + 7), at(fused, (5 * d + 7) * 2 * f + 7));
      EXPECT_EQ(at(ours.at("layers.2.moe.experts.5.b13"), f + 3), at(hf.at("model.layers.2.mlp.experts.gate_up_proj_bias"), 5 * 2 * f + 7));
    }
  }
}

// Imported weights (train.init_weights) at one rank and at tp2 x pp2: the same 3 steps, and not
// the random initialisation's.
TEST(HfInterop, InitWeightsStartsEveryLayoutFromTheImportedModel) {
  testing::RunDir d("hf_init");
  const std::string recipe = std::string(SY_SOURCE_DIR) + "/recipes/mixtral/8x7b-mini.toml";
  const char* mini = "recipes/mixtral/8x7b-mini.toml";
  const std::string base = " --set train.steps=3 --set train.log_every=1 --set train.eval_every=0"
                           " --set train.eval_batches=1 --set optim.eps=1e-5";
  ASSERT_EQ(d.train("src", 0, base + " --set train.seed=99", "", mini).code, 0);
  ASSERT_EQ(sh(d, "export '" + recipe + "' --weights src/weights.h5 --to-hf hf").code, 0);
  ASSERT_EQ(sh(d, "import '" + recipe + "' --from-hf hf --out start.h5").code, 0);
  const std::string init = " --set train.init_weights=" + (d.path() / "start.h5").string();
  ASSERT_EQ(d.train("fresh", 0, base + " --set train.grad_accum=2", "", mini).code, 0);
  auto r = d.train("one", 0, base + init + " --set train.grad_accum=2", "", mini);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("parameters start from"), std::string::npos);
  r = d.train("tp2pp2", 4, base + init + " --set train.grad_accum=2 --set parallel.tp=2 --set parallel.pp=2", "", mini);
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_same_run(d, "one", "tp2pp2", 3);
  EXPECT_NE(d.losses("one").at(0), d.losses("fresh").at(0));  // the import took effect
}

}  // namespace
}  // namespace sy
