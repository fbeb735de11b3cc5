// `switchyard sbatch`: a Slurm batch script for a recipe, following Slurm's conventions for jobs
// that outlive their allocation: --requeue and --open-mode=append, --signal=B:USR1@<grace> so the
// script hears of the time limit launch.preempt_grace_s seconds ahead, one srun step with
// --kill-on-bad-exit=1 --mpi=pmix, and a stable out_dir per job name, so the requeued job resumes
// from its latest checkpoint. The script passes USR1 on to the step; the ranks save and exit 75,
// which the script turns into `scontrol requeue $SLURM_JOB_ID`.
#pragma once

#include <string>
#include <vector>

#include "config/recipe.h"

namespace sy {

struct SbatchOptions {
  std::string recipe;
  std::vector<std::string> sets;
  int nodes = 1;
  int tasks_per_node = 1;
  int gpus_per_node = 0;  // > 0: --gpus-per-node and one task per GPU
  std::string time = "01:00:00";
  std::string partition;
  std::string job_name;   // default: the recipe's name
  std::string script;     // default: <out_dir>/<job name>.sbatch
  bool submit = false;
  std::string self_exe;
  std::string workdir;    // where relative paths resolve (the current directory)
};

// Seconds in a Slurm time limit ("MM", "MM:SS", "HH:MM:SS", "D-HH[:MM[:SS]]"); ConfigError if malformed.
long slurm_time_seconds(const std::string& t);

// The script's text. `out_dir` is absolute.
std::string sbatch_script(const SbatchOptions& o, const Recipe& r, const std::string& out_dir);

// Checks, writes the script, and with --submit hands it to sbatch; returns the exit code.
int run_sbatch(SbatchOptions o);

}  // namespace sy
