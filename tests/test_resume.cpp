// Resume from checkpoints, end to end through `switchyard train`: 20 steps straight equal 10 steps,
// a checkpoint, a fresh process resuming, and 10 more, bit for bit (dp2 x ZeRO-1, grad_accum 2,
// capacity drops on, mid-epoch; dp2 x ep2; pp2 x vpp2 x dp2); and a checkpoint loads into every other layout.
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

using Layout = std::pair<std::string, std::pair<int, std::string>>;  // name, (ranks, --set overrides)

// Resumes `from_dir` in a layout for one step: its loss equals `want` within 1e-6.
void expect_next_step_loss(const testing::RunDir& d, const std::string& base, const std::string& from_dir,
                           const std::string& tag, const Layout& to, double want) {
  const std::string run = "load_" + tag + "_at_" + to.first;
  const auto r = d.train(run, to.second.first,
                         base + to.second.second + " --set train.stop_at_step=11 --set checkpoint.resume=" + from_dir);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto got = d.losses(run);
  ASSERT_EQ(got.size(), 1u) << run;
  EXPECT_NEAR(got[0], want, 1e-6 * want) << run;
}

// Saved at step 10 in every layout, each loaded at every other (the same global batch per step
// everywhere): loaded and written straight back (a run resumed at its stop step saves and
// stops), every parameter and every optimizer moment, gathered to its global tensor, equals the
// saved one bit for bit; and the first step after loading has the loss of the uninterrupted
// `straight` run (one rank) within 1e-6.
void check_resharding_matrix(const testing::RunDir& d, const std::string& base, std::span<const Layout> layouts,
                             const std::string& straight) {
  ASSERT_EQ(d.train("straight", 0, base + straight).code, 0);
  const double want = d.losses("straight").at(10);
  for (const auto& [name, layout] : layouts) {
    const auto r = d.train("save_" + name, layout.first,
                           base + layout.second + " --set checkpoint.every_steps=10 --set train.stop_at_step=10");
    ASSERT_EQ(r.code, 0) << r.output;
  }
  for (const auto& [from, unused] : layouts)
    for (const Layout& to : layouts) {
      if (from == to.first) continue;
      const std::string from_dir = (d.path() / ("save_" + from) / "checkpoints" / "step_00000010").string();
      const std::string back = "back_" + from + "_at_" + to.first;
      auto rb = d.train(back, to.second.first,
                        base + to.second.second + " --set train.stop_at_step=10 --set checkpoint.every_steps=10" +
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
      expect_next_step_loss(d, base, from_dir, from, to, want);
    }
}

TEST(Resume, TwentyStepsEqualTenPlusResumePlusTenBitwise) {
  testing::RunDir d("resume");
  expect_split_run_equals_straight(d, 2, kBase);
}

TEST(Resume, Dp2Ep2Zero1ResumesBitwise) {
  // 4 ranks, dp2 x ep2 with ZeRO-1, grad_accum 2, capacity drops.
  testing::RunDir d("resume_dpep");
  expect_split_run_equals_straight(d, 4, std::string(kBase) + " --set parallel.ep=2 --set model.n_shared_experts=1");
}

TEST(Resume, PipelineRunResumesBitwise) {
  // pp2 x vpp2 x dp2 with ZeRO-1 (4 layers, one per chunk), the aux-free bias moving: the stages'
  // checkpoint pieces and router biases bring back exactly the state the straight run has.
  testing::RunDir d("resume_pp");
  expect_split_run_equals_straight(d, 4,
                                   std::string(kBase) + " --set model.n_layers=4 --set parallel.pp=2 --set parallel.vpp=2"
                                                        " --set model.router_bias_update_rate=0.01");
}

TEST(Resume, ReshardingMatrixAcrossDpEpZeroLayouts) {
  // dp2 x ep2 x zero1, ep4 (zero 0) and one rank; 16 sequences per step.
  testing::RunDir d("matrix");
  const Layout layouts[] = {{"dp2ep2z1", {4, " --set parallel.ep=2 --set parallel.zero=1"}},
                            {"ep4", {4, " --set parallel.ep=4 --set parallel.zero=0"}},
                            {"one", {0, " --set parallel.zero=0 --set train.grad_accum=8"}}};
  check_resharding_matrix(d, kBase, layouts, " --set parallel.zero=0 --set train.grad_accum=8");
}

TEST(Resume, ReshardingMatrixAcrossTpLayouts) {
  // tp2 x dp2 x ep2 with sp and zero 1, tp4 (zero 0), tp2 x dp2 with etp 2 and zero 1 (each
  // expert's rows split over the TP ranks, each slice's moments sharded over its EDP pair) and one
  // rank; 8 sequences per step. Four KV heads so that tp 4 splits them; a dense layer and a shared
  // expert so every kind of TP block is in the checkpoint.
  testing::RunDir d("tp_matrix");
  const std::string base = std::string(kBase) +
                           " --set model.n_kv_heads=4 --set model.first_dense_layers=1 --set model.d_ff=64"
                           " --set model.n_shared_experts=1";
  const Layout layouts[] = {
      {"tp2dp2ep2", {4, " --set parallel.tp=2 --set parallel.sp=true --set parallel.ep=2 --set parallel.zero=1"}},
      {"tp4", {4, " --set parallel.tp=4 --set parallel.zero=0 --set train.grad_accum=4"}},
      {"tp2dp2etp2", {4, " --set parallel.tp=2 --set parallel.etp=2 --set parallel.zero=1"}},
      {"one", {0, " --set parallel.zero=0 --set train.grad_accum=4"}}};
  check_resharding_matrix(d, base, layouts, " --set parallel.zero=0 --set train.grad_accum=4");
}

TEST(Resume, ReshardingMatrixAcrossPipelineLayouts) {
  // pp2 x tp2 x ep2 (sp), pp4, pp2 x vpp2 x dp2 with zero 1, dp4 x ep2 without stages (pp1) and
  // one rank; 8 sequences per step and 4 layers (a dense one, MoE ones with a shared expert) so
  // that pp 4 gives every stage a layer. Each stage writes its own layers' pieces; a stage's
  // router biases come from its (dp 0, tp 0) rank.
  testing::RunDir d("pp_matrix");
  const std::string base = std::string(kBase) +
                           " --set model.n_layers=4 --set model.n_kv_heads=4 --set model.first_dense_layers=1"
                           " --set model.d_ff=64 --set model.n_shared_experts=1 --set model.router_bias_update_rate=0.01";
  const Layout layouts[] = {
      {"pp2tp2ep2",
       {4, " --set parallel.pp=2 --set parallel.tp=2 --set parallel.sp=true --set parallel.ep=2 --set parallel.zero=0"
           " --set train.grad_accum=4"}},
      {"pp4", {4, " --set parallel.pp=4 --set parallel.zero=0 --set train.grad_accum=4"}},
      {"pp2vpp2dp2z1", {4, " --set parallel.pp=2 --set parallel.vpp=2 --set parallel.zero=1"}},
      {"pp1dp4ep2", {4, " --set parallel.ep=2 --set parallel.zero=1 --set train.grad_accum=1"}},
      {"one", {0, " --set parallel.zero=0 --set train.grad_accum=4"}}};
  check_resharding_matrix(d, base, layouts, " --set parallel.zero=0 --set train.grad_accum=4");
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
