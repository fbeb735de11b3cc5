// The NaN/Inf guard end to end (trainer/step_guard.h): a step made non-finite on one rank only
// (SY_FAULT_NAN_STEP) changes nothing on any rank; max_bad_steps of them in a row roll back to the
// last checkpoint and pass over their data, exactly like a run told by hand to skip those windows.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "run_harness.h"
#include "trainer/step_guard.h"

namespace sy {
namespace {

const char* kSets = " --set train.steps=20 --set parallel.zero=1";

std::vector<float> tensor(const std::string& step_dir, const std::string& name) {
  const CheckpointReader c(step_dir);
  std::vector<float> v(shape_numel(c.shape(name)));
  c.read(name, 0, int64_t(v.size()), v.data(), DType::F32);
  return v;
}

TEST(NanGuard, DataSkipsMapStepsToWindows) {
  DataSkips d;
  EXPECT_EQ(d.window(7), 7);
  d.add(5, 3);
  d.add(9, 2);
  EXPECT_EQ(d.window(4), 4);
  EXPECT_EQ(d.window(5), 8);
  EXPECT_EQ(d.window(8), 11);
  EXPECT_EQ(d.window(9), 14);
  // A rollback to step 4 for bad steps 5..7 (0-based) replays step index 4 and passes over 5..7;
  // one to a checkpoint inside the run passes over only what is left of it.
  EXPECT_EQ(skip_for_rollback(4, 5, 3), std::make_pair(int64_t(5), int64_t(3)));
  EXPECT_EQ(skip_for_rollback(6, 5, 3), std::make_pair(int64_t(6), int64_t(2)));
  BadStepGuard g(2);
  EXPECT_EQ(g.judge(1.0, 4.0, 0), StepVerdict::Update);
  EXPECT_EQ(g.judge(NAN, 4.0, 1), StepVerdict::Skip);
  EXPECT_EQ(g.judge(1.0, INFINITY, 2), StepVerdict::RollBack);
  EXPECT_EQ(g.run_first(), 1);
  EXPECT_EQ(g.run_length(), 2);
  g.rolled_back();
  EXPECT_EQ(g.judge(NAN, 1.0, 1), StepVerdict::Skip);
  EXPECT_EQ(g.judge(NAN, 1.0, 2), StepVerdict::RollBack);
  EXPECT_THROW(g.rolled_back(), std::runtime_error);  // no step got through in between
  EXPECT_EQ(g.skipped_total(), 4);
}

TEST(NanGuard, OneNonFiniteStepOnOneRankIsSkippedOnEveryRank) {
  testing::RunDir d("nan_one");
  ASSERT_EQ(d.train("clean", 2, kSets).code, 0);
  const std::string ck = " --set checkpoint.every_steps=1 --set checkpoint.keep=100";
  const auto r = d.train("bad", 2, kSets + ck, "SY_FAULT_NAN_STEP=6 SY_FAULT_NAN_RANK=1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("step 6/20 | loss"), std::string::npos);
  EXPECT_NE(r.output.find("SKIPPED: non-finite"), std::string::npos) << r.output;
  const auto clean = d.field("clean", "loss"), bad = d.field("bad", "loss");
  ASSERT_EQ(bad.size(), 20u);
  // Steps 1-6 are the clean run's (step 6's forward pass is unchanged; only its gradients were
  // poisoned), step 7 on differ because step 6 did not update.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(bad[i], clean[i]) << "step " << i + 1;
  EXPECT_NE(bad[6], clean[6]);
  const auto gn = d.field("bad", "grad_norm");
  ASSERT_EQ(gn.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(gn[i] == "null", i == 5) << "step " << i + 1;
  EXPECT_EQ(d.field("bad", "skipped"), std::vector<std::string>{"true"});
  const auto counts = d.field("bad", "skipped_steps");
  ASSERT_EQ(counts.size(), 15u);  // steps 6..20
  EXPECT_EQ(counts.back(), "1");
  // Every parameter and every rank's ZeRO-1 moment shard is the same after step 6 as after step 5.
  const std::string c5 = (d.path() / "bad/checkpoints/step_00000005").string();
  const std::string c6 = (d.path() / "bad/checkpoints/step_00000006").string();
  const CheckpointReader a(c5);
  int compared = 0;
  for (const std::string& name : a.names()) {
    EXPECT_TRUE(tensor(c5, name) == tensor(c6, name)) << name;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  for (double x : d.losses("bad")) EXPECT_TRUE(std::isfinite(x));
}

TEST(NanGuard, BadStepsInARowRollBackAndSkipTheirDataLikeAHandSkip) {
  testing::RunDir d("nan_run");
  const std::string ck = " --set checkpoint.every_steps=4";
  const auto r = d.train("bad", 2, kSets + ck, "SY_FAULT_NAN_STEP=6 SY_FAULT_NAN_STEPS=3 SY_FAULT_NAN_RANK=1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("3 non-finite steps in a row (steps 6-8); rolled back to step 4 and skip 3 data window(s) "
                          "from step 6 on"),
            std::string::npos)
      << r.output;
  // The reference: 4 clean steps, then a resume told by hand (data_skips.txt) to pass over the
  // windows of steps 6-8.
  ASSERT_EQ(d.train("hand", 2, kSets + ck + " --set train.stop_at_step=4").code, 0);
  std::ofstream(d.path() / "hand" / "data_skips.txt") << "5 3\n";
  const auto h = d.train("hand", 2, kSets + ck);
  ASSERT_EQ(h.code, 0) << h.output;
  const auto bad = d.field("bad", "loss"), hand = d.field("hand", "loss");
  ASSERT_EQ(bad.size(), 20u);  // steps 1..20 once each: the rolled-back records were dropped
  EXPECT_EQ(bad, hand);
  EXPECT_EQ(d.field("bad", "step").back(), "20");
  EXPECT_EQ(d.field("bad", "rollbacks").back(), "1");
  EXPECT_EQ(d.field("bad", "skipped_steps").back(), "3");
  EXPECT_EQ(d.file("bad/data_skips.txt").find("5 3\n") != std::string::npos, true);
  // The run passes over data the clean run trained on: from step 6 on it differs.
  ASSERT_EQ(d.train("clean", 2, kSets).code, 0);
  const auto clean = d.field("clean", "loss");
  EXPECT_TRUE(std::equal(clean.begin(), clean.begin() + 5, bad.begin()));
  EXPECT_NE(clean[5], bad[5]);
}

TEST(NanGuard, BadStepsWithNoCheckpointStopWithOneLine) {
  testing::RunDir d("nan_nockpt");
  const auto r = d.train("bad", 0, " --set train.max_bad_steps=2", "SY_FAULT_NAN_STEP=3 SY_FAULT_NAN_STEPS=5");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("switchyard: error: bad steps in a row and no checkpoint under"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("set checkpoint.every_steps"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sy
