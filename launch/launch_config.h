// How a job is launched and kept alive: the recipe's [launch] section (read by `switchyard run`
// and `switchyard sbatch`; `switchyard train` ignores it).
#pragma once

#include <cstdint>

namespace sy {

struct LaunchConfig {
  double hang_timeout_s = 600;  // no rank finishes a step for this long: the job is hung, restart it
  int64_t max_restarts = 3;     // restarts after a dead or hung rank before the supervisor gives up
  double backoff_s = 5;         // wait before the first restart, doubling for each one after it
  double backoff_max_s = 300;   // the longest wait between restarts
  int64_t preempt_grace_s = 120;  // sbatch: Slurm warns the job (SIGUSR1) this long before its time limit
};

}  // namespace sy
