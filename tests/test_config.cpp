// Recipe parsing: every kind of bad input is a ConfigError whose one-line message names the key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/recipe.h"
#include "engine/config_error.h"

namespace sy {
namespace {

// The message of the ConfigError that parsing throws, or "" (a test failure) if none is thrown.
std::string error_of(const std::string& toml, const std::vector<std::string>& sets = {}) {
  try {
    parse_recipe(toml, "t", sets);
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  ADD_FAILURE() << "no ConfigError for:\n" << toml;
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* kSmall = R"(
[model]
vocab_size = 256
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
n_experts = 4
top_k = 2
[train]
steps = 10
)";

TEST(ConfigRecipe, DefaultsAndValues) {
  const Recipe r = parse_recipe(kSmall, "small");
  EXPECT_EQ(r.name, "small");
  EXPECT_EQ(r.model.d_model, 64);
  EXPECT_EQ(r.model.n_experts, 4);
  EXPECT_EQ(r.train.steps, 10);
  EXPECT_EQ(r.train.out_dir, "runs/small");
  EXPECT_EQ(r.optim.name, "adamw");
  EXPECT_EQ(r.model.score_fn, ScoreFn::Softmax);
}

TEST(ConfigRecipe, EveryShippedRecipeLoads) {
  for (const auto& e : std::filesystem::directory_iterator(SY_SOURCE_DIR "/recipes")) {
    if (e.path().extension() != ".toml") continue;
    SCOPED_TRACE(e.path().string());
    const Recipe r = load_recipe(e.path().string());
    EXPECT_EQ(r.name, e.path().stem().string());
  }
}

TEST(ConfigRecipe, ResolvedTomlRoundTrips) {
  const Recipe r = parse_recipe(kSmall, "small", {"model.score_fn=sigmoid", "optim.lr=0.01", "train.seed=7"});
  EXPECT_TRUE(has(r.resolved_toml, "score_fn = \"sigmoid\"")) << r.resolved_toml;
  const Recipe again = parse_recipe(r.resolved_toml, "small");
  EXPECT_EQ(again.model.score_fn, ScoreFn::Sigmoid);
  EXPECT_EQ(again.optim.lr, 0.01);
  EXPECT_EQ(again.train.seed, 7u);
  EXPECT_EQ(again.train.out_dir, "runs/small");
  // Writing the re-read recipe gives the same keys and values (the header comment aside).
  auto body = [](const std::string& s) { return s.substr(s.find("\n[")); };
  EXPECT_EQ(body(again.resolved_toml), body(r.resolved_toml));
}

TEST(ConfigRecipe, EveryKeyIsRead) {
  const Recipe r = parse_recipe(R"(
[model]
vocab_size = 300
d_model = 48
n_layers = 3
n_heads = 6
n_kv_heads = 3
head_dim = 10
rope_theta = 500.0
seq_len = 33
norm_eps = 1e-6
tie_embeddings = true
init_std = 0.05
d_ff = 99
first_dense_layers = 1
n_experts = 5
top_k = 3
expert_ffn_dim = 17
n_shared_experts = 2
score_fn = "sigmoid"
norm_topk_prob = false
capacity_factor = 1.25
aux_loss_coef = 0.5
z_loss_coef = 0.25
router_bias_update_rate = 0.125
qk_norm = "head"
n_expert_groups = 5
topk_groups = 3
routed_scaling_factor = 2.5
[optim]
name = "sgd"
lr = 0.5
min_lr = 0.25
warmup_steps = 7
schedule = "constant"
beta1 = 0.5
beta2 = 0.75
eps = 1e-7
weight_decay = 0.0
grad_clip = 0
decay_norms = true
decay_embeddings = true
[data]
train = "a.tok"
val = "b.tok"
[train]
steps = 5
seed = 9
micro_batch = 3
grad_accum = 2
log_every = 4
eval_every = 0
eval_batches = 6
max_minutes = 1.5
out_dir = "o"
save_weights = "w.h5"
peak_gflops = 12
dtype = "float64"
[engine]
device = "cpu"
[parallel]
tp = 1
cp = 1
pp = 1
vpp = 2
pp_layers = [1, 2]
ep = 1
etp = 1
dp = 2
zero = 1
order = "tp-cp-dp-pp"
timeout_s = 30
bucket_mb = 4
)",
                                "all");
  const ModelConfig& m = r.model;
  EXPECT_EQ(m.vocab_size, 300);
  EXPECT_EQ(m.head_dim, 10);
  EXPECT_EQ(m.rope_theta, 500.0);
  EXPECT_EQ(m.seq_len, 33);
  EXPECT_EQ(m.norm_eps, 1e-6);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.init_std, 0.05);
  EXPECT_EQ(m.d_ff, 99);
  EXPECT_EQ(m.first_dense_layers, 1);
  EXPECT_EQ(m.top_k, 3);
  EXPECT_EQ(m.expert_ffn_dim, 17);
  EXPECT_EQ(m.n_shared_experts, 2);
  EXPECT_EQ(m.score_fn, ScoreFn::Sigmoid);
  EXPECT_FALSE(m.norm_topk_prob);
  EXPECT_EQ(m.capacity_factor, 1.25);
  EXPECT_EQ(m.router_bias_update_rate, 0.125);
  EXPECT_EQ(m.qk_norm, "head");
  EXPECT_EQ(m.n_expert_groups, 5);
  EXPECT_EQ(m.topk_groups, 3);
  EXPECT_EQ(m.routed_scaling_factor, 2.5);
  EXPECT_EQ(r.parallel.vpp, 2);
  EXPECT_EQ(r.parallel.pp_layers, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(r.optim.name, "sgd");
  EXPECT_EQ(r.optim.schedule, "constant");
  EXPECT_EQ(r.optim.grad_clip, 0.0);
  EXPECT_TRUE(r.optim.decay_norms && r.optim.decay_embeddings);
  EXPECT_EQ(r.data.train, "a.tok");
  EXPECT_EQ(r.data.val, "b.tok");
  EXPECT_EQ(r.train.seed, 9u);
  EXPECT_EQ(r.train.max_minutes, 1.5);
  EXPECT_EQ(r.train.out_dir, "o");
  EXPECT_EQ(r.train.save_weights, "w.h5");
  EXPECT_EQ(r.train.peak_gflops, 12.0);
  EXPECT_EQ(r.train.dtype, "float64");
  EXPECT_EQ(r.parallel.dp, 2);
  EXPECT_EQ(r.parallel.zero, 1);
  EXPECT_EQ(r.parallel.bucket_mb, 4.0);
}

TEST(ConfigErrors, UnknownKeyNamesKeyAndSuggests) {
  const std::string msg = error_of("[model]\nd_modle = 64\n");
  EXPECT_TRUE(has(msg, "unknown key model.d_modle")) << msg;
  EXPECT_TRUE(has(msg, "did you mean model.d_model")) << msg;
  EXPECT_TRUE(has(msg, "valid keys of [model]")) << msg;
}

TEST(ConfigErrors, UnknownSection) {
  const std::string msg = error_of("[modle]\nd_model = 64\n");
  EXPECT_TRUE(has(msg, "unknown section [modle]")) << msg;
  EXPECT_TRUE(has(msg, "[model]")) << msg;
}

TEST(ConfigErrors, WrongType) {
  std::string msg = error_of("[model]\nn_layers = \"four\"\n");
  EXPECT_TRUE(has(msg, "model.n_layers must be an integer, got string \"four\"")) << msg;
  msg = error_of("[model]\nn_layers = 2.5\n");
  EXPECT_TRUE(has(msg, "model.n_layers must be an integer")) << msg;
  msg = error_of("[optim]\nlr = \"fast\"\n");
  EXPECT_TRUE(has(msg, "optim.lr must be a number")) << msg;
  msg = error_of("[model]\ntie_embeddings = 1\n");
  EXPECT_TRUE(has(msg, "model.tie_embeddings must be true or false")) << msg;
  msg = error_of("[model]\nscore_fn = \"relu\"\n");
  EXPECT_TRUE(has(msg, "model.score_fn")) << msg;
  msg = error_of("[train]\nseed = -1\n");
  EXPECT_TRUE(has(msg, "train.seed")) << msg;
  msg = error_of("model = 3\n");
  EXPECT_TRUE(has(msg, "not a section")) << msg;
}

TEST(ConfigErrors, IntegerAcceptedForFloat) {
  EXPECT_EQ(parse_recipe("[optim]\nlr = 1\nmin_lr = 0\n", "t").optim.lr, 1.0);
}

TEST(ConfigErrors, TomlSyntaxNamesLine) {
  const std::string msg = error_of("[model]\nd_model = = 3\n");
  EXPECT_TRUE(has(msg, "recipe \"t\":2:")) << msg;
}

TEST(ConfigErrors, ModelSizes) {
  std::string msg = error_of("[model]\nd_model = 100\nn_heads = 8\n");
  EXPECT_TRUE(has(msg, "model.d_model=100")) << msg;
  EXPECT_TRUE(has(msg, "model.n_heads=8")) << msg;
  msg = error_of("[model]\nn_experts = 8\ntop_k = 9\n");
  EXPECT_TRUE(has(msg, "model.top_k=9 exceeds model.n_experts=8; set top_k <= n_experts")) << msg;
  msg = error_of("[model]\nn_heads = 8\nn_kv_heads = 3\n");
  EXPECT_TRUE(has(msg, "model.n_kv_heads=3")) << msg;
  msg = error_of("[model]\nhead_dim = 7\n");
  EXPECT_TRUE(has(msg, "model.head_dim=7")) << msg;
  msg = error_of("[model]\nd_model = 24\nn_heads = 8\n");  // head width 3 is odd
  EXPECT_TRUE(has(msg, "model.d_model/model.n_heads")) << msg;
  msg = error_of("[model]\nn_layers = 2\nfirst_dense_layers = 3\n");
  EXPECT_TRUE(has(msg, "model.first_dense_layers=3")) << msg;
  msg = error_of("[model]\ncapacity_factor = -1.0\n");
  EXPECT_TRUE(has(msg, "model.capacity_factor")) << msg;
  msg = error_of("[model]\nvocab_size = 0\n");
  EXPECT_TRUE(has(msg, "model.vocab_size=0")) << msg;
  msg = error_of("[model]\nd_model = -4\n");
  EXPECT_TRUE(has(msg, "model.d_model=-4")) << msg;
  msg = error_of("[model]\nn_experts = 8\nn_expert_groups = 3\n");
  EXPECT_TRUE(has(msg, "model.n_expert_groups=3 does not divide model.n_experts=8; choose a divisor")) << msg;
  msg = error_of("[model]\nn_experts = 8\nn_expert_groups = 4\ntopk_groups = 5\n");
  EXPECT_TRUE(has(msg, "model.topk_groups=5 must be between 1 and model.n_expert_groups=4")) << msg;
  msg = error_of("[model]\nn_experts = 8\ntop_k = 3\nn_expert_groups = 4\ntopk_groups = 1\n");
  EXPECT_TRUE(has(msg, "model.topk_groups=1 groups of 2 experts cannot hold model.top_k=3; raise topk_groups")) << msg;
  msg = error_of("[model]\nrouted_scaling_factor = 0\n");
  EXPECT_TRUE(has(msg, "model.routed_scaling_factor")) << msg;
  msg = error_of("[model]\nqk_norm = \"rms\"\n");
  EXPECT_TRUE(has(msg, "model.qk_norm=\"rms\" is not one of")) << msg;
}

TEST(ConfigErrors, DenseRecipeIgnoresRouterSettings) {
  // top_k keeps its default of 2 while n_experts = 0: nothing is routed, so that is fine.
  const Recipe r = parse_recipe("[model]\nn_experts = 0\n", "dense");
  EXPECT_EQ(r.model.n_experts, 0);
}

TEST(ConfigErrors, OtherSections) {
  EXPECT_TRUE(has(error_of("[train]\nsteps = 0\n"), "train.steps=0"));
  EXPECT_TRUE(has(error_of("[train]\nmicro_batch = 0\n"), "train.micro_batch=0"));
  EXPECT_TRUE(has(error_of("[optim]\nname = \"adam\"\n"), "optim.name=\"adam\""));
  EXPECT_TRUE(has(error_of("[optim]\nschedule = \"linear\"\n"), "optim.schedule"));
  EXPECT_TRUE(has(error_of("[optim]\nlr = 0.001\nmin_lr = 0.01\n"), "optim.min_lr"));
  EXPECT_TRUE(has(error_of("[train]\ndtype = \"bfloat16\"\n"), "train.dtype"));
  // The device moved to [engine]: the old key is an unknown key, named as such.
  EXPECT_TRUE(has(error_of("[train]\ndevice = \"cuda\"\n"), "train.device"));
  EXPECT_TRUE(has(error_of("[engine]\ndevice = \"gpu\"\n"), "engine.device=\"gpu\""));
  EXPECT_TRUE(has(error_of("[engine]\ndevice = \"cuda-emu\"\n[train]\ndtype = \"float64\"\n"), "engine.device=\"cpu\""));
  EXPECT_TRUE(has(error_of("[data]\ntrain = \"\"\n"), "data.train"));
  EXPECT_TRUE(has(error_of("[parallel]\nzero = 3\n"), "parallel.zero"));
  EXPECT_TRUE(has(error_of("[parallel]\ntp = 0\n"), "parallel.tp"));
}

TEST(ConfigOverrides, ApplyAndTypeCheck) {
  const Recipe r = parse_recipe(kSmall, "small",
                                {"train.steps=3", "optim.lr=1e-2", "model.tie_embeddings=true",
                                 "data.train=data/other.tok", "train.out_dir=\"runs/x y\"", "optim.min_lr = 0"});
  EXPECT_EQ(r.train.steps, 3);
  EXPECT_EQ(r.optim.lr, 1e-2);
  EXPECT_TRUE(r.model.tie_embeddings);
  EXPECT_EQ(r.data.train, "data/other.tok");  // not TOML: taken as a string
  EXPECT_EQ(r.train.out_dir, "runs/x y");
  EXPECT_EQ(r.optim.min_lr, 0.0);
  EXPECT_TRUE(has(r.resolved_toml, "steps = 3"));
  // A later --set wins, and a section the file lacks is created.
  EXPECT_EQ(parse_recipe(kSmall, "s", {"parallel.dp=1", "parallel.dp=2"}).parallel.dp, 2);

  std::string msg = error_of(kSmall, {"model.n_layers=four"});
  EXPECT_TRUE(has(msg, "model.n_layers must be an integer, got string \"four\"")) << msg;
  EXPECT_TRUE(has(msg, "--set model.n_layers=four")) << msg;
  msg = error_of(kSmall, {"model.d_modle=3"});
  EXPECT_TRUE(has(msg, "unknown key model.d_modle in --set model.d_modle=3")) << msg;
  msg = error_of(kSmall, {"modle.d_model=3"});
  EXPECT_TRUE(has(msg, "unknown section [modle]")) << msg;
  msg = error_of(kSmall, {"model.top_k=9", "model.n_experts=8"});
  EXPECT_TRUE(has(msg, "model.top_k=9 exceeds model.n_experts=8")) << msg;
}

TEST(ConfigOverrides, BadSyntax) {
  for (const std::string bad : {"steps=3", "train.steps", "train..steps=1", ".steps=1", "a.b.c=1", "=3"}) {
    const std::string msg = error_of(kSmall, {bad});
    EXPECT_TRUE(has(msg, "bad --set")) << msg;
    EXPECT_TRUE(has(msg, "section.key=value")) << msg;
  }
}

TEST(ConfigFiles, MissingRecipeFile) {
  try {
    load_recipe("/nonexistent/dir/nope.toml");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(has(e.what(), "/nonexistent/dir/nope.toml")) << e.what();
  }
}

TEST(ConfigFiles, UnknownKeyNamesFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("sy_cfg_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "x.toml").string();
  std::ofstream(path) << "[model]\nd_modle = 64\n";
  try {
    load_recipe(path);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(has(e.what(), "unknown key model.d_modle in " + path)) << e.what();
  }
  std::ofstream(path) << "[model]\nd_model = 64\n";
  const Recipe r = load_recipe(path, {"train.steps=2"});
  EXPECT_EQ(r.name, "x");
  EXPECT_EQ(r.path, path);
  EXPECT_EQ(r.train.steps, 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sy
