// `switchyard run` under mpirun (launch/supervisor.h): a rank killed mid-step or during a save,
// or stopped (SIGSTOP), is noticed, recorded in incidents.jsonl, and the job restarts from its last
// good checkpoint and ends with exactly the losses of an uninterrupted run; max_restarts used up
// ends it with one summary line and the last good checkpoint intact.
#include <gtest/gtest.h>

#include <regex>

#include "launch_harness.h"

namespace sy {
namespace {

using testing::beat_at_step;
using testing::lines_of;
using testing::spawn_shell;
using testing::supervised_cmd;
using testing::wait_exit;

// 120 steps of ~15 ms (a 10 ms sleep keeps the step boundary reachable by a kill from outside),
// checkpoints every 25.
const std::string kSets = " --set train.steps=120 --set train.log_every=1 --set checkpoint.every_steps=25"
                          " --set launch.backoff_s=0.2";
const std::string kSlow = "SY_TEST_STEP_DELAY_MS=10";

std::string field(const std::string& json, const std::string& key) {
  std::smatch m;
  return std::regex_search(json, m, std::regex("\"" + key + "\":(\"[^\"]*\"|[^,}]+)")) ? std::string(m[1]) : "";
}

TEST(Supervisor, RankKilledMidStepRestartsAndEndsWithTheUninterruptedLosses) {
  testing::RunDir d("sup_kill");
  ASSERT_EQ(d.train("straight", 2, kSets).code, 0);
  const pid_t sup = spawn_shell(supervised_cmd(d, "run", 2, kSets, kSlow));
  const RankBeat b = beat_at_step(d.path() / "run", 1, 40, 60);
  ASSERT_EQ(b.rank, 1) << d.file("run.log");
  ASSERT_EQ(kill(pid_t(b.pid), SIGKILL), 0);
  ASSERT_EQ(wait_exit(sup, 240), 0) << d.file("run.log");
  const auto inc = lines_of(d.path() / "run" / "incidents.jsonl");
  ASSERT_EQ(inc.size(), 1u) << d.file("run.log");
  EXPECT_EQ(field(inc[0], "rank"), "1");
  EXPECT_EQ(field(inc[0], "cause"), "\"killed by signal 9 (SIGKILL)\"");
  EXPECT_EQ(field(inc[0], "restart"), "1");
  const int64_t resume = std::stoll(field(inc[0], "resume_step")), reached = std::stoll(field(inc[0], "step_reached"));
  EXPECT_EQ(resume % 25, 0);
  EXPECT_GE(resume, 25);
  EXPECT_EQ(std::stoll(field(inc[0], "steps_lost")), reached - resume);
  EXPECT_NE(d.file("run.log").find("switchyard run: incident: rank 1 killed by signal 9 (SIGKILL) at step"),
            std::string::npos);
  EXPECT_NE(d.file("run.log").find("resumed from"), std::string::npos);
  EXPECT_EQ(d.field("run", "loss"), d.field("straight", "loss"));
  EXPECT_EQ(d.field("run", "loss").size(), 120u);
}

TEST(Supervisor, RankKilledDuringACheckpointSaveRestartsFromThePreviousOne) {
  testing::RunDir d("sup_ckpt");
  ASSERT_EQ(d.train("straight", 2, kSets).code, 0);
  // Rank 1 dies while writing its shard of the step-50 checkpoint (first attempt only).
  const int code = wait_exit(
      spawn_shell(supervised_cmd(d, "run", 2, kSets, "SY_FAULT_CKPT_KILL=writing SY_FAULT_CKPT_RANK=1 SY_FAULT_CKPT_STEP=50")),
      240);
  ASSERT_EQ(code, 0) << d.file("run.log");
  const auto inc = lines_of(d.path() / "run" / "incidents.jsonl");
  ASSERT_EQ(inc.size(), 1u) << d.file("run.log");
  EXPECT_EQ(field(inc[0], "rank"), "1");
  EXPECT_EQ(field(inc[0], "cause"), "\"killed by signal 9 (SIGKILL)\"");
  EXPECT_EQ(field(inc[0], "resume_step"), "25");  // step 50 never committed
  EXPECT_EQ(d.field("run", "loss"), d.field("straight", "loss"));
}

TEST(Supervisor, StoppedRankIsReportedHungWithWhereItStoodAndTheJobRestarts) {
  testing::RunDir d("sup_hang");
  const std::string sets = kSets + " --set launch.hang_timeout_s=4";
  ASSERT_EQ(d.train("straight", 2, sets).code, 0);
  const pid_t sup = spawn_shell(supervised_cmd(d, "run", 2, sets, kSlow));
  const RankBeat b = beat_at_step(d.path() / "run", 1, 40, 60);
  ASSERT_EQ(b.rank, 1) << d.file("run.log");
  ASSERT_EQ(kill(pid_t(b.pid), SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(testing::wait_until([&] { return !lines_of(d.path() / "run" / "incidents.jsonl").empty(); }, 60))
      << d.file("run.log");
  const double noticed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  EXPECT_LT(noticed_s, 4 + 6.0);  // hang_timeout_s plus a few seconds
  EXPECT_GE(noticed_s, 3.0);
  ASSERT_EQ(wait_exit(sup, 240), 0) << d.file("run.log");
  const auto inc = lines_of(d.path() / "run" / "incidents.jsonl");
  ASSERT_EQ(inc.size(), 1u);
  EXPECT_EQ(field(inc[0], "rank"), "1") << inc[0];
  const std::string cause = field(inc[0], "cause");
  EXPECT_NE(cause.find("hung: no rank finished a step for "), std::string::npos) << cause;
  EXPECT_NE(cause.find("(launch.hang_timeout_s=4); it stood at rank 1 (pid " + std::to_string(b.pid)), std::string::npos)
      << cause;
  EXPECT_NE(cause.find("(not responding)"), std::string::npos) << cause;
  EXPECT_TRUE(std::regex_search(cause, std::regex(", phase [a-z_]+"))) << cause;
  // Rank 0 is blocked in the collective that waits for rank 1, and says which: where depends on
  // where the stop caught rank 1 (a gradient all-reduce over dp or edp, the checkpoint's
  // all_gather over the world at a save step, ...), so any operation and group, named.
  EXPECT_TRUE(std::regex_search(inc[0], std::regex("rank 0 \\(pid [0-9]+ on [^)]*\\): step [0-9]+, phase [a-z_]+, waiting "
                                                   "in [a-z_]+ on group (dp|edp|world) for [0-9.]+ s")))
      << inc[0];
  EXPECT_NE(d.file("run.log").find("switchyard run: hang: rank 1"), std::string::npos);
  EXPECT_EQ(d.field("run", "loss"), d.field("straight", "loss"));
}

TEST(Supervisor, MaxRestartsUsedUpStopsWithOneSummaryLineAndTheLastGoodCheckpointIntact) {
  testing::RunDir d("sup_giveup");
  // Rank 1 dies in every attempt while saving step 50: each restart resumes from 25 and dies again.
  const int code = wait_exit(spawn_shell(supervised_cmd(d, "run", 2, kSets + " --set launch.max_restarts=2",
                                                        "SY_FAULT_ATTEMPTS=99 SY_FAULT_CKPT_KILL=writing "
                                                        "SY_FAULT_CKPT_RANK=1 SY_FAULT_CKPT_STEP=50")),
                             240);
  EXPECT_EQ(code, 4) << d.file("run.log");
  const auto inc = lines_of(d.path() / "run" / "incidents.jsonl");
  ASSERT_EQ(inc.size(), 3u) << d.file("run.log");
  EXPECT_EQ(field(inc[0], "restart"), "1");
  EXPECT_EQ(field(inc[1], "restart"), "2");
  EXPECT_EQ(field(inc[2], "restart"), "0");
  std::vector<std::string> errors;
  for (const std::string& l : lines_of(d.path() / "run.log"))
    if (l.find("error") != std::string::npos) errors.push_back(l);
  ASSERT_EQ(errors.size(), 1u) << d.file("run.log");
  EXPECT_EQ(errors[0].rfind("switchyard run: error: gave up after 2 restart(s) (launch.max_restarts=2): 1. rank 1 killed "
                            "by signal 9 (SIGKILL) at step ", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("; 3. rank 1 killed by signal 9 (SIGKILL)"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("the last good checkpoint is step 25 under"), std::string::npos) << errors[0];
  EXPECT_EQ(testing::slurp(d.path() / "run" / "checkpoints" / "latest"), "step_00000025\n");
  const std::string verify = "'" SY_BINARY_DIR "/switchyard' ckpt verify '" + (d.path() / "run").string() + "' > /dev/null 2>&1";
  EXPECT_EQ(std::system(verify.c_str()), 0);
}

TEST(Supervisor, SignalToTheSupervisorSavesStopsWith75AndTheRerunResumesToTheSameLosses) {
  testing::RunDir d("sup_signal");
  ASSERT_EQ(d.train("straight", 2, kSets).code, 0);
  const pid_t sup = spawn_shell(supervised_cmd(d, "run", 2, kSets, kSlow));
  ASSERT_EQ(beat_at_step(d.path() / "run", 0, 30, 60).rank, 0) << d.file("run.log");
  kill(sup, SIGTERM);
  ASSERT_EQ(wait_exit(sup, 120), 75) << d.file("run.log");
  const std::string log = d.file("run.log");
  EXPECT_NE(log.find("preempted (SIGTERM/SIGUSR1): checkpoint saved"), std::string::npos) << log;
  const auto before = d.field("run", "loss");
  ASSERT_GE(before.size(), 30u);
  ASSERT_LT(before.size(), 120u);
  EXPECT_EQ(testing::slurp(d.path() / "run" / "checkpoints" / "latest"),
            "step_" + std::string(8 - std::to_string(before.size()).size(), '0') + std::to_string(before.size()) + "\n");
  EXPECT_FALSE(testing::fs::exists(d.path() / "run" / "incidents.jsonl"));  // a preemption is no incident
  ASSERT_EQ(wait_exit(spawn_shell(supervised_cmd(d, "run", 2, kSets)), 120), 0) << d.file("run.log");
  EXPECT_EQ(d.field("run", "loss"), d.field("straight", "loss"));
}

}  // namespace
}  // namespace sy

namespace sy {
namespace {

TEST(Preemption, Sigusr1ToOneRankStopsEveryRankAtTheSameStepWithACheckpointAndExit75) {
  testing::RunDir d("preempt");
  const std::string sets = " --set train.steps=120 --set train.log_every=1";
  ASSERT_EQ(d.train("straight", 2, sets).code, 0);
  const std::string cmd = "cd '" + d.path().string() + "' && SY_TEST_STEP_DELAY_MS=10 OMPI_ALLOW_RUN_AS_ROOT=1 "
                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 exec " + testing::kMpirunWords + " -np 2 '" SY_BINARY_DIR
                          "/switchyard' train '" SY_SOURCE_DIR "/tests/recipes/tiny-test.toml' --set data.train=train.tok "
                          "--set data.val=val.tok --set train.out_dir=run" + sets + " > run.log 2>&1";
  const pid_t job = testing::spawn_shell(cmd);
  const RankBeat b = testing::beat_at_step(d.path() / "run", 1, 30, 60);
  ASSERT_EQ(b.rank, 1) << d.file("run.log");
  kill(pid_t(b.pid), SIGUSR1);  // rank 1 only: the step-boundary all-reduce tells rank 0
  EXPECT_EQ(testing::wait_exit(job, 120), 75) << d.file("run.log");
  const auto before = d.field("run", "loss");
  ASSERT_GE(before.size(), 30u);
  ASSERT_LT(before.size(), 120u);
  // checkpoint.every_steps is 0: the preemption saved anyway, at the step both ranks stopped at.
  char want[32];
  std::snprintf(want, sizeof want, "step_%08zu\n", before.size());
  EXPECT_EQ(testing::slurp(d.path() / "run" / "checkpoints" / "latest"), want);
  const auto again = d.train("run", 2, sets);
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_EQ(d.field("run", "loss"), d.field("straight", "loss"));
}

}  // namespace
}  // namespace sy
