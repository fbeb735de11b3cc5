// The `switchyard train` / `eval` path end to end on a small synthetic corpus.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <regex>

#include "run_harness.h"

namespace sy {
namespace {

TEST(TrainCli, SameSeedGivesBitwiseIdenticalLossesOver50Steps) {
  testing::RunDir d("determinism");
  const std::string sets = " --set train.steps=50 --set model.capacity_factor=1.0";
  ASSERT_EQ(d.train("a", 0, sets).code, 0) << d.file("a.log");
  ASSERT_EQ(d.train("b", 0, sets).code, 0) << d.file("b.log");
  ASSERT_EQ(d.train("c", 0, sets + " --set train.seed=8").code, 0) << d.file("c.log");
  const auto a = d.losses("a"), b = d.losses("b"), c = d.losses("c");
  ASSERT_EQ(a.size(), 50u);
  EXPECT_EQ(a, b);             // bit for bit: the JSON numbers round-trip doubles exactly
  EXPECT_NE(a.front(), c.front());  // and the seed matters
  EXPECT_LT(a.back(), a.front() - 1.0);  // it learns
}

TEST(TrainCli, EvalOfSavedWeightsReproducesTheFinalValidationLoss) {
  testing::RunDir d("eval");
  const auto r = d.train("run", 0, " --set train.steps=20");
  ASSERT_EQ(r.code, 0) << r.output;
  std::smatch m;
  const std::string metrics = d.file("run/metrics.jsonl");
  ASSERT_TRUE(std::regex_search(metrics, m, std::regex("\"val_loss\":([-0-9.eE+]+)")));
  const double val = std::stod(m[1]);
  // tiny-test.toml: eval_batches 2 x micro_batch 2 = the first 4 validation windows, in order.
  const std::string cmd = "cd '" + d.path().string() + "' && '" SY_BINARY_DIR "/switchyard' eval '" SY_SOURCE_DIR
                          "/tests/recipes/tiny-test.toml' --weights run/weights.h5 --data val.tok --windows 4 > eval.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << d.file("eval.log");
  const std::string eval_log = d.file("eval.log");
  ASSERT_TRUE(std::regex_search(eval_log, m, std::regex("loss ([0-9.]+) nats")));
  EXPECT_NEAR(std::stod(m[1]), val, 1e-6) << eval_log;
}

TEST(TrainCli, CtrlCStopsCleanlyAfterAFinalEvaluationAndSavesTheWeights) {
  testing::RunDir d("sigint");
  // Start a long run, interrupt it once it has logged a step, and expect a clean exit.
  const std::string cmd =
      "cd '" + d.path().string() + "' && ('" SY_BINARY_DIR "/switchyard' train '" SY_SOURCE_DIR
      "/tests/recipes/tiny-test.toml' --set train.steps=1000000 --set train.out_dir=run"
      " --set train.save_weights=run/weights.h5 > run.log 2>&1 & pid=$!;"
      " for i in $(seq 100); do grep -q '^step' run.log 2>/dev/null && break; sleep 0.1; done;"
      " kill -INT $pid; wait $pid)";
  const int status = std::system(cmd.c_str());
  const std::string log = d.file("run.log");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 0) << log;
  EXPECT_NE(log.find("stopped by signal"), std::string::npos) << log;
  EXPECT_NE(d.file("run/metrics.jsonl").find("val_loss"), std::string::npos);
  EXPECT_FALSE(d.weights("run").empty());
}

}  // namespace
}  // namespace sy
