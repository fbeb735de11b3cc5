// The batch script `switchyard sbatch` writes: Slurm's conventions for a job that is warned,
// requeued and resumed (launch/sbatch.h). Run for real in tests/slurm/slurm_tests.sh.
#include <gtest/gtest.h>

#include "config/recipe.h"
#include "engine/config_error.h"
#include "launch/sbatch.h"

namespace sy {
namespace {

TEST(SbatchScript, HasTheDirectivesAndTheRequeueOnExit75) {
  const Recipe r = parse_recipe("[data]\ntrain = \"t.tok\"\nval = \"v.tok\"\n[launch]\npreempt_grace_s = 90\n", "demo");
  SbatchOptions o;
  o.recipe = "/r/demo.toml";
  o.sets = {"train.steps=7"};
  o.nodes = 2;
  o.tasks_per_node = 4;
  o.time = "02:00:00";
  o.partition = "gpu";
  o.self_exe = "/opt/sy/switchyard";
  o.workdir = "/home/me/work";
  const std::string s = sbatch_script(o, r, "/home/me/work/runs/demo");
  for (const char* line :
       {"#!/bin/bash\n", "\n#SBATCH --job-name=demo\n", "\n#SBATCH --nodes=2\n", "\n#SBATCH --ntasks-per-node=4\n",
        "\n#SBATCH --time=02:00:00\n", "\n#SBATCH --partition=gpu\n", "\n#SBATCH --requeue\n", "\n#SBATCH --open-mode=append\n",
        "\n#SBATCH --signal=B:USR1@90\n", "\n#SBATCH --output=/home/me/work/runs/demo/slurm-%x.out\n",
        "\ncd '/home/me/work' || exit 1\n",
        "\nsrun --kill-on-bad-exit=1 --mpi=pmix '/opt/sy/switchyard' train '/r/demo.toml' --set 'train.steps=7' --set "
        "'train.out_dir=/home/me/work/runs/demo' &\n",
        "kill -USR1 $step' USR1 TERM\n", "\nmarker='/home/me/work/runs/demo/preempted'\nrm -f \"$marker\"\n",
        "\nif [ $rc -eq 75 ] || [ -f \"$marker\" ]; then\n", "\n  scontrol requeue $SLURM_JOB_ID\n"})
    EXPECT_NE(s.find(line), std::string::npos) << line << "\n---\n" << s;
  EXPECT_EQ(s.find("gpus-per-node"), std::string::npos);
}

TEST(SbatchScript, TimeLimits) {
  EXPECT_EQ(slurm_time_seconds("90"), 5400);
  EXPECT_EQ(slurm_time_seconds("05:30"), 330);
  EXPECT_EQ(slurm_time_seconds("01:00:00"), 3600);
  EXPECT_EQ(slurm_time_seconds("1-02"), 93600);
  EXPECT_EQ(slurm_time_seconds("1-00:00:10"), 86410);
  EXPECT_THROW(slurm_time_seconds("1h"), ConfigError);
}

}  // namespace
}  // namespace sy
