// The built `switchyard` binary turns bad input into exit code 2 and one stderr line naming the
// key or file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("sy_cli_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  static std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Runs `switchyard ARGS` in the temp dir (so relative paths such as runs/ land there).
  Result run(const std::string& args) {
    const std::string cmd = "cd '" + dir_.string() + "' && '" SY_BINARY_DIR "/switchyard' " + args + " >'" +
                            (dir_ / "stdout").string() + "' 2>'" + (dir_ / "stderr").string() + "'";
    const int status = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir_ / "stdout");
    r.err = slurp(dir_ / "stderr");
    return r;
  }
  static void expect_one_error_line(const Result& r, const std::string& must_name) {
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("switchyard: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(must_name), std::string::npos) << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line:\n" << r.err;
  }

  fs::path dir_;
};

const char* kRecipe = R"([model]
vocab_size = 256
d_model = 32
n_layers = 1
n_heads = 4
n_kv_heads = 2
seq_len = 16
n_experts = 4
top_k = 2
expert_ffn_dim = 16
[data]
train = "missing.train.tok"
val = "missing.val.tok"
[train]
steps = 2
micro_batch = 2
)";

TEST_F(CliTest, UnknownRecipeKey) {
  const std::string p = write("bad.toml", std::string(kRecipe) + "d_modle = 3\n");
  expect_one_error_line(run("train '" + p + "'"), "train.d_modle");
}

TEST_F(CliTest, WrongType) {
  const std::string p = write("r.toml", kRecipe);
  expect_one_error_line(run("train '" + p + "' --set model.n_layers=four"), "model.n_layers");
}

TEST_F(CliTest, BadSetSyntax) {
  const std::string p = write("r.toml", kRecipe);
  expect_one_error_line(run("train '" + p + "' --set steps=3"), "section.key=value");
}

TEST_F(CliTest, MissingRecipeFile) {
  expect_one_error_line(run("train does-not-exist.toml"), "does-not-exist.toml");
}

TEST_F(CliTest, MissingDataFile) {
  const std::string p = write("r.toml", kRecipe);
  expect_one_error_line(run("train '" + p + "'"), "missing.train.tok");
}

TEST_F(CliTest, UsageErrors) {
  expect_one_error_line(run("train"), "RECIPE");
  expect_one_error_line(run("frobnicate"), "frobnicate");
  expect_one_error_line(run("data prepare --out x"), "--fortunes or --text");
}

TEST_F(CliTest, HelpOnEverySubcommand) {
  for (const char* sub : {"", "train", "eval", "data", "data prepare"}) {
    const Result r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub << ": " << r.err;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub << ": " << r.out;
  }
}

TEST_F(CliTest, PrepareText) {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "record " + std::to_string(i) + "\n%\n";
  const std::string in = write("in.txt", text);
  const Result r = run("data prepare --text '" + in + "' --out out/t --val-every 10");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "out/t.train.tok"));
  EXPECT_TRUE(fs::exists(dir_ / "out/t.val.tok"));
}

}  // namespace

namespace {

// `switchyard plan`: an unknown GPU, a layout that cannot fit, a layout the engine refuses, a GPU
// count nothing fits on, and a recipe without a size the planner needs: one line each, exit 2.
TEST_F(CliTest, PlanBadInput) {
  const std::string mixtral = SY_SOURCE_DIR "/recipes/mixtral/8x7b.toml";
  expect_one_error_line(run("plan " + mixtral + " --gpu a100"), "unknown GPU \"a100\"");
  expect_one_error_line(run("plan " + mixtral + " --gpu h100 --gpus 8 --layout ep=8"), "cannot fit");
  expect_one_error_line(run("plan " + mixtral + " --gpu h100 --gpus 8 --layout ep=3"), "parallel.ep=3");
  expect_one_error_line(run("plan " + mixtral + " --gpu h100 --gpus 8"), "use --gpus 16 or more");
  expect_one_error_line(run("plan " + mixtral + " --gpu h100 --layout tp=2,foo=1 --gpus 8"), "foo");
  std::string no_width = kRecipe;
  no_width.replace(no_width.find("d_model = 32\n"), 13, "");
  expect_one_error_line(run("plan " + write("nowidth.toml", no_width) + " --gpu h100"), "[model] has no d_model");
  // And a good one prints the fewest GPUs.
  const Result ok = run("plan " + mixtral + " --gpu h100");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find("fewest GPUs: 16"), std::string::npos) << ok.out;
}

}  // namespace
