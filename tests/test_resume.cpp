// Resume from checkpoints, end to end through `switchyard train`: 20 steps straight equal 10 steps,
// a checkpoint, a fresh process resuming, and 10 more, bit for bit (dp2 x ZeRO-1, grad_accum 2,
// capacity drops on, mid-epoch); and a checkpoint loads into another data-parallel layout.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <span>

#include "checkpoint/checkpoint.h"
#include "run_harness.h"

namespace sy {
namespace {

const char* kBase =
    " --set train.steps=20 --set train.grad_accum=2 --set model.capacity_factor=1.0 --set parallel.zero=1";

void expect_same_weights_bitwise(const testing::RunDir& d, const std::string& a, const std::string& b) {
  const auto wa = d.weights(a), wb = d.weights(b);
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, arr] : wa) EXPECT_TRUE(arr.bytes == wb.at(name).bytes) << b << " " << name;
}

// 20 steps straight against 10 steps (stopping cleanly, saving), then a fresh launch that
// resumes by itself for the other 10: every loss as written (17 significant digits: the doubles
// themselves) and every final parameter equal bit for bit.
void expect_split_run_equals_straight(const testing::RunDir& d, int ranks, const std::string& sets) {
  const std::string ck = " --set checkpoint.every_steps=5";
  auto r = d.train("straight", ranks, sets);
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train("split", ranks, sets + ck + " --set train.stop_at_step=10");
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_EQ(d.losses("split").size(), 10u);
  r = d.train("split", ranks, sets + ck);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("after step 10"), std::string::npos) << r.output;
  const auto a = d.field("straight", "loss"), b = d.field("split", "loss");
  ASSERT_EQ(a.size(), 20u);
  EXPECT_EQ(a, b);
  expect_same_weights_bitwise(d, "straight", "split");
}

// Resumes `from_dir` in each layout for one step: its loss equals `want` within 1e-6.
void expect_next_step_loss(const testing::RunDir& d, const std::string& from_dir, const std::string& tag,
                           std::span<const std::pair<std::string, std::pair<int, std::string>>> layouts, double want) {
  for (const auto& [name, layout] : layouts) {
    const std::string run = "load_" + tag + "_at_" + name;
    const auto r = d.train(run, layout.first,
                           std::string(kBase) + layout.second + " --set train.stop_at_step=11 --set checkpoint.resume=" +
                               from_dir);
    ASSERT_EQ(r.code, 0) << r.output;
    const auto got = d.losses(run);
    ASSERT_EQ(got.size(), 1u) << run;
    EXPECT_NEAR(got[0], want, 1e-6 * want) << run;
  }
}

TEST(Resume, TwentyStepsEqualTenPlusResumePlusTenBitwise) {
  testing::RunDir d("resume");
  expect_split_run_equals_straight(d, 2, kBase);
}

TEST(Resume, CheckpointFromDp2Zero1LoadsIntoOneRankAndDp4Zero2) {
  testing::RunDir d("reshard");
  const std::string ck = " --set checkpoint.every_steps=5";
  auto r = d.train("straight", 2, kBase);
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train("saved", 2, std::string(kBase) + ck + " --set train.stop_at_step=10");
  ASSERT_EQ(r.code, 0) << r.output;
  // The same global batch (4 micro-batches of 2 per step) on other layouts, resuming from
  // saved/'s checkpoint: the next step's loss equals the uninterrupted run's within 1e-6.
  const std::pair<std::string, std::pair<int, std::string>> layouts[] = {
      {"one", {0, " --set parallel.zero=0 --set train.grad_accum=4"}},
      {"dp4", {4, " --set parallel.zero=2 --set train.grad_accum=1"}}};
  expect_next_step_loss(d, (d.path() / "saved" / "checkpoints" / "step_00000010").string(), "saved", layouts,
                        d.losses("straight").at(10));
}

TEST(Resume, Dp2Ep2Zero1ResumesBitwise) {
  // The layout: 4 ranks, dp2 x ep2 with ZeRO-1, grad_accum 2, capacity drops.
  testing::RunDir d("resume_dpep");
  expect_split_run_equals_straight(d, 4, std::string(kBase) + " --set parallel.ep=2");
}

TEST(Resume, ExpertParallelRunResumesBitwiseAndLoadsIntoOtherLayouts) {
  testing::RunDir d("resume_ep");
  const std::string shared = " --set parallel.zero=0 --set model.n_shared_experts=1";
  expect_split_run_equals_straight(d, 2, std::string(kBase) + shared + " --set parallel.ep=2");
  // The ep2 checkpoint (experts' moments written by their owners) into one rank and into dp2
  // without expert parallelism: the next step's loss equals the uninterrupted run's.
  const std::pair<std::string, std::pair<int, std::string>> layouts[] = {
      {"one", {0, shared + " --set train.grad_accum=4"}}, {"dp2", {2, shared}}};
  expect_next_step_loss(d, (d.path() / "split" / "checkpoints" / "step_00000010").string(), "ep2", layouts,
                        d.losses("straight").at(10));
}

TEST(Resume, ReshardingMatrixAcrossDpEpZeroLayouts) {
  // Saved at dp2 x ep2 x zero1, at ep4 (zero 0) and on one rank, each loaded at the two others
  // (the same global batch of 16 sequences per step everywhere): the first step after loading
  // has the loss of an uninterrupted 1-rank run within 1e-6.
  testing::RunDir d("matrix");
  const std::pair<std::string, std::pair<int, std::string>> layouts[] = {
      {"dp2ep2z1", {4, " --set parallel.ep=2 --set parallel.zero=1"}},
      {"ep4", {4, " --set parallel.ep=4 --set parallel.zero=0"}},
      {"one", {0, " --set parallel.zero=0 --set train.grad_accum=8"}}};
  ASSERT_EQ(d.train("straight", 0, std::string(kBase) + " --set parallel.zero=0 --set train.grad_accum=8").code, 0);
  const double want = d.losses("straight").at(10);
  for (const auto& [name, layout] : layouts) {
    const auto r = d.train("save_" + name, layout.first,
                           std::string(kBase) + layout.second + " --set checkpoint.every_steps=10 --set train.stop_at_step=10");
    ASSERT_EQ(r.code, 0) << r.output;
  }
  for (const auto& [from, unused] : layouts)
    for (const auto& [to, layout] : layouts) {
      if (from == to) continue;
      // Loaded at the other layout and written straight back (a run resumed at its stop step
      // saves and stops): every parameter and every optimizer moment, gathered to its global
      // tensor, equals the saved one bit for bit.
      const std::string from_dir = (d.path() / ("save_" + from) / "checkpoints" / "step_00000010").string();
      const std::string back = "back_" + from + "_at_" + to;
      auto rb = d.train(back, layout.first,
                        std::string(kBase) + layout.second + " --set train.stop_at_step=10 --set checkpoint.every_steps=10" +
                            " --set checkpoint.resume=" + from_dir);
      ASSERT_EQ(rb.code, 0) << rb.output;
      const CheckpointReader a(from_dir), b((d.path() / back / "checkpoints" / "step_00000010").string());
      ASSERT_EQ(a.names(), b.names()) << back;
      for (const std::string& name : a.names()) {
        const int64_t n = shape_numel(a.shape(name));
        std::vector<float> x(n), y(n);
        a.read(name, 0, n, x.data(), DType::F32);
        b.read(name, 0, n, y.data(), DType::F32);
        ASSERT_TRUE(x == y) << back << " " << name;
      }
      const std::pair<std::string, std::pair<int, std::string>> one[] = {{to, layout}};
      expect_next_step_loss(d, from_dir, from, one, want);
    }
}

TEST(Resume, AsyncCheckpointsHoldTheValuesOfTheirStepWhileTrainingGoesOn) {
  // With checkpoint.async the step-5 checkpoint is written while steps 6.. change the model; a
  // run resumed from it must still reproduce the uninterrupted run bit for bit.
  testing::RunDir d("async");
  const std::string sets =
      std::string(kBase) + " --set checkpoint.every_steps=5 --set checkpoint.async=true --set checkpoint.keep=4";
  auto r = d.train("async", 2, sets);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_EQ(d.train("straight", 2, kBase).code, 0);
  EXPECT_EQ(d.field("async", "loss"), d.field("straight", "loss"));  // saving does not perturb training
  for (const char* name : {"step_00000005", "step_00000010", "step_00000015", "step_00000020"})
    EXPECT_TRUE(testing::fs::exists(d.path() / "async" / "checkpoints" / name / "manifest.json")) << name;
  r = d.train("from5", 2, std::string(kBase) + " --set checkpoint.resume=" +
                              (d.path() / "async" / "checkpoints" / "step_00000005").string());
  ASSERT_EQ(r.code, 0) << r.output;
  const auto want = d.field("straight", "loss"), got = d.field("from5", "loss");
  ASSERT_EQ(got.size(), 15u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() + 5));
  expect_same_weights_bitwise(d, "straight", "from5");
}

int verify(const testing::RunDir& d, const std::string& run) {
  const std::string cmd = "'" SY_BINARY_DIR "/switchyard' ckpt verify '" + (d.path() / run).string() + "' > /dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Resume, RankKilledAtEachPhaseOfASaveThenTheJobResumesToTheSameLosses) {
  testing::RunDir d("killed");
  const std::string sets = std::string(kBase) + " --set checkpoint.every_steps=5";
  ASSERT_EQ(d.train("straight", 2, kBase).code, 0);
  const auto want = d.field("straight", "loss");
  for (const char* phase : {"writing", "before_manifest", "before_rename", "before_latest"}) {
    for (int rank : {0, 1}) {
      const std::string run = std::string("k_") + phase + "_" + std::to_string(rank);
      const auto r = d.train(run, 2, sets,
                             std::string("SY_FAULT_CKPT_STEP=10 SY_FAULT_CKPT_KILL=") + phase +
                                 " SY_FAULT_CKPT_RANK=" + std::to_string(rank));
      EXPECT_NE(r.code, 0) << run << r.output;
      EXPECT_LT(r.seconds, 60) << run;
      // `latest` names a checkpoint that verifies (step 5, or step 10 once renamed) ...
      EXPECT_EQ(verify(d, run), 0) << run;
      // ... and a plain relaunch resumes from it and ends with the uninterrupted run's losses.
      const auto again = d.train(run, 2, sets);
      ASSERT_EQ(again.code, 0) << run << again.output;
      EXPECT_NE(again.output.find("resumed from"), std::string::npos) << run;
      EXPECT_EQ(d.field(run, "loss"), want) << run;
    }
  }
}

TEST(Resume, DiskFullOnOneRankCommitsNothingAndStopsOrContinuesAsConfigured) {
  testing::RunDir d("enospc");
  const std::string sets = std::string(kBase) + " --set checkpoint.every_steps=5";
  const std::string fault = "SY_FAULT_CKPT_ENOSPC=1 SY_FAULT_CKPT_STEP=10";
  ASSERT_EQ(d.train("straight", 2, kBase).code, 0);
  auto r = d.train("stop", 2, sets, fault);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("rank 0: error: checkpoint step 10 not saved"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1: error: checkpoint step 10 not saved"), std::string::npos) << r.output;
  EXPECT_FALSE(testing::fs::exists(d.path() / "stop" / "checkpoints" / "step_00000010"));
  EXPECT_EQ(testing::slurp(d.path() / "stop" / "checkpoints" / "latest").find("step_00000005"), 0u);
  EXPECT_EQ(verify(d, "stop"), 0);
  r = d.train("go_on", 2, sets + " --set checkpoint.on_failure=continue", fault);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("training continues"), std::string::npos) << r.output;
  EXPECT_EQ(d.field("go_on", "loss"), d.field("straight", "loss"));
  EXPECT_FALSE(testing::fs::exists(d.path() / "go_on" / "checkpoints" / "step_00000010"));
}

}  // namespace
}  // namespace sy
