// One attempt of a job: the launcher (mpirun or srun) started in its own process group with its
// output piped through the supervisor, which echoes it and reads the launcher's own report of a
// rank that died ("mpirun noticed that process rank 1 ... exited on signal 9", "srun: error: ...
// task 1: Killed").
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace sy {

struct RankDeath {
  int rank = -1;
  std::string cause;  // "killed by signal 9 (SIGKILL)", "exited with code 3"
};

class RankJob {
 public:
  // Starts argv with `env` (NAME=value) added to this process's environment. std::runtime_error
  // when it cannot be started.
  RankJob(const std::vector<std::string>& argv, const std::vector<std::string>& env);
  ~RankJob();  // kills whatever is left (the launcher's process group)
  RankJob(const RankJob&) = delete;
  RankJob& operator=(const RankJob&) = delete;

  // Echoes the output available now (waiting at most `wait_ms` for some) and scans it.
  void pump(int wait_ms);
  // The launcher's wait status once it has exited (reaped); nullopt while it runs.
  std::optional<int> exited();
  // The first rank the launcher reported dead, if it did.
  const std::optional<RankDeath>& reported_death() const { return death_; }
  // Signals the launcher (e.g. SIGUSR1, which mpirun and srun pass on to the ranks).
  void signal_launcher(int sig);
  // Ends the attempt within about `grace_s`: SIGKILL to `rank_pids` (stopped processes too), the
  // launcher asked to end its job, then its whole process group killed. Reaps the launcher.
  void stop(const std::vector<long>& rank_pids, double grace_s);

 private:
  void scan(const std::string& line);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string partial_;
  std::optional<int> status_;
  std::optional<RankDeath> death_;
  int pending_exit_rank_ = -1;  // mpirun names the process on one line and its exit code on a later one
};

// "9 (SIGKILL)" for a signal number.
std::string signal_name(int sig);

}  // namespace sy
