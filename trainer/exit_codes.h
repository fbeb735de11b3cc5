// The exit codes of `switchyard train` (and of `switchyard run`, which passes them on), which
// batch scripts and the supervisor act on (docs/launch.md).
#pragma once

namespace sy {

constexpr int kExitOk = 0;         // finished, or stopped cleanly (Ctrl-C, time budget, stop_at_step)
constexpr int kExitFailure = 1;    // an error; the message says which
constexpr int kExitUsage = 2;      // bad command line, recipe or launch environment: fix and rerun
constexpr int kExitPeerLost = 3;   // a collective timed out: another rank stalled or died; restart
constexpr int kExitRestartsUsedUp = 4;  // switchyard run: launch.max_restarts restarts did not get it through
constexpr int kExitPreempted = 75; // SIGTERM/SIGUSR1: checkpoint saved, requeue me (75 = EX_TEMPFAIL)

// Written into out_dir by world rank 0 after a preempted run's checkpoint, beside exit code 75:
// a batch script cannot always see the 75 (srun may report a rank it killed instead).
inline constexpr const char* kPreemptMarker = "preempted";

}  // namespace sy
