// `switchyard run`: starts the ranks (mpirun, or srun inside a Slurm allocation), watches them,
// and when one dies or the job hangs (no rank finishes a step for launch.hang_timeout_s), ends the
// attempt and starts another from the last good checkpoint, up to launch.max_restarts times with
// exponential back-off. Incidents go to <out_dir>/incidents.jsonl and stdout (launch/incidents.h).
// SIGTERM, SIGUSR1 or SIGINT to the supervisor reach the ranks as SIGUSR1: they save and exit 75,
// and so does the supervisor.
#pragma once

#include <string>
#include <vector>

namespace sy {

struct RunOptions {
  std::string recipe;
  std::vector<std::string> sets;  // --set overrides, passed on to every rank
  int ranks = 0;                  // 0: SLURM_NTASKS inside an allocation, else 1
  std::string launcher;           // the launcher command line; "": srun inside an allocation, else mpirun
  std::string self_exe;           // the switchyard binary the ranks run
};

// The exit code: 0 finished; 75 preempted (checkpoint saved); 2 a configuration error (nothing
// restarted); 4 launch.max_restarts used up (one summary line on stderr).
int run_supervised(const RunOptions& o);

}  // namespace sy
