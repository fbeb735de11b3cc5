// A bad launch environment ends `switchyard run`, `sbatch` and `train` with one line naming the
// problem and the fix, exit code 2, and nothing under an existing out_dir changed.
#include <gtest/gtest.h>

#include "run_harness.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string out;
};

Result sh(const testing::RunDir& d, const std::string& cmd) {
  const fs::path log = d.path() / "cmd.log";
  const int st = std::system(("cd '" + d.path().string() + "' && " + cmd + " > '" + log.string() + "' 2>&1").c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, testing::slurp(log)};
}

std::string sy_cmd(const std::string& sub, const std::string& args) {
  return "'" SY_BINARY_DIR "/switchyard' " + sub + " '" SY_SOURCE_DIR "/tests/recipes/tiny-test.toml' " + args;
}

// Every file under `dir` with its contents.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[e.path().string()] = testing::slurp(e.path());
  return m;
}

void expect_one_line(const Result& r, const std::string& starts_with, const std::string& contains) {
  EXPECT_EQ(r.code, 2) << r.out;
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "more than one line: " << r.out;
  EXPECT_EQ(r.out.rfind(starts_with, 0), 0u) << r.out;
  EXPECT_NE(r.out.find(contains), std::string::npos) << r.out;
}

TEST(LaunchErrors, OneLineEachAndAnExistingRunUntouched) {
  testing::RunDir d("launch_err");
  // A finished run whose out_dir every bad launch below points at.
  ASSERT_EQ(d.train("run", 0, " --set train.steps=3 --set checkpoint.every_steps=3").code, 0);
  const auto before = snapshot(d.path() / "run");
  const std::string sets = "--set data.train=train.tok --set data.val=val.tok --set train.out_dir=run";

  // A world size that does not fit the layout: 3 ranks, ep=2.
  expect_one_line(sh(d, sy_cmd("run", "--ranks 3 " + sets + " --set parallel.ep=2")),
                  "switchyard: error: --ranks 3 does not fit the recipe's layout: ", "parallel.etp*ep=2 does not divide");
  expect_one_line(sh(d, sy_cmd("sbatch", "--tasks-per-node 3 " + sets + " --set parallel.ep=2")),
                  "switchyard: error: --nodes 1 x --tasks-per-node 3 = 3 ranks does not fit the recipe's layout: ",
                  "parallel.etp*ep=2");
  // Inconsistent Slurm variables, read by a rank and by the supervisor.
  expect_one_line(sh(d, "SLURM_PROCID=2 SLURM_NTASKS=2 " + sy_cmd("train", sets)),
                  "switchyard: rank 2: error: SLURM_PROCID=2 is not below SLURM_NTASKS=2", "fix the launch environment");
  expect_one_line(sh(d, "SLURM_PROCID=1 SLURM_NTASKS=1 " + sy_cmd("train", sets)),
                  "switchyard: rank 1: error: SLURM_PROCID=1 is not below SLURM_NTASKS=1", "fix the launch environment");
  expect_one_line(sh(d, "SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_LOCALID=2 SLURM_NTASKS_PER_NODE=2 " + sy_cmd("train", sets)),
                  "switchyard: rank 0: error: SLURM_LOCALID=2 is not below SLURM_NTASKS_PER_NODE=2", "fix the launch environment");
  // Slurm says 2 tasks but MPI started this one alone (srun --mpi=none starts singletons).
  expect_one_line(sh(d, "SLURM_PROCID=0 SLURM_NTASKS=2 " + sy_cmd("train", sets)),
                  "switchyard: rank 0: error: MPI started 1 rank(s) but Slurm says 2", "srun --mpi=pmix");
  expect_one_line(sh(d, "SLURM_JOB_ID=7 SLURM_NTASKS=two " + sy_cmd("run", sets)),
                  "switchyard: error: SLURM_NTASKS=\"two\" is not a non-negative integer", "fix the Slurm environment");
  expect_one_line(sh(d, "SLURM_JOB_ID=7 SLURM_NTASKS=2 " + sy_cmd("run", "--ranks 4 " + sets)),
                  "switchyard: error: --ranks 4 exceeds the 2 tasks of this Slurm allocation", "pass --ranks 2");
  // An out_dir that cannot be written (a regular file stands where its directory would go).
  std::ofstream(d.path() / "blocker") << "keep me\n";
  expect_one_line(sh(d, sy_cmd("run", "--set data.train=train.tok --set data.val=val.tok --set train.out_dir=blocker/out")),
                  "switchyard: error: train.out_dir=blocker/out cannot be created (Not a directory)",
                  "set train.out_dir to a writable path");
  expect_one_line(sh(d, sy_cmd("sbatch", "--set data.train=train.tok --set data.val=val.tok --set train.out_dir=blocker/out")),
                  "switchyard: error: train.out_dir=" + (d.path() / "blocker/out").string() + " cannot be created",
                  "set train.out_dir to a writable path");
  expect_one_line(sh(d, sy_cmd("train", "--set data.train=train.tok --set data.val=val.tok --set train.out_dir=blocker/out")),
                  "switchyard: error: blocker/out: cannot create train.out_dir", "choose a writable path");
  EXPECT_EQ(testing::slurp(d.path() / "blocker"), "keep me\n");
  // A missing recipe.
  for (const char* sub : {"run", "sbatch", "train"})
    expect_one_line(sh(d, std::string("'" SY_BINARY_DIR "/switchyard' ") + sub + " missing.toml " + sets),
                    "switchyard: error: missing.toml: no such recipe file", "check the path");
  // A time limit the preemption warning does not fit in.
  expect_one_line(sh(d, sy_cmd("sbatch", "--time 00:01:00 " + sets)), "switchyard: error: --time 00:01:00 is not longer than "
                  "launch.preempt_grace_s=120 s", "raise --time or lower launch.preempt_grace_s");

  EXPECT_EQ(snapshot(d.path() / "run"), before);
}

TEST(LaunchErrors, WorldSizeNotFittingTheLayoutUnderMpirunStopsEveryRankWithOneLine) {
  testing::RunDir d("launch_err_mpi");
  const auto r = d.train("run", 3, " --set parallel.ep=2");
  EXPECT_EQ(r.code, 2) << r.output;
  // mpirun ends the job at the first rank's exit, so not every rank may get to say it.
  EXPECT_NE(r.output.find("switchyard: rank 0: error: parallel.etp*ep=2 does not divide tp*cp*dp=3; choose ep"),
            std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(d.path() / "run"));  // nothing written
}

}  // namespace
}  // namespace sy
