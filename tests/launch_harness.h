// Background launches for the supervisor and preemption tests: start a command, watch the ranks'
// heartbeat files (trainer/heartbeat.h) to act at a chosen step, and collect the exit code.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "launch/heartbeats.h"
#include "run_harness.h"

namespace sy::testing {

// `bash -c cmd` in the background.
inline pid_t spawn_shell(const std::string& cmd) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/bash", "bash", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// The exit code (128 + signal if killed); -1 after `timeout_s` (the process is then killed).
inline int wait_exit(pid_t pid, double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int st = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

inline bool wait_until(const std::function<bool()>& ok, double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!ok()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Rank `rank`'s heartbeat under `out_dir`, once its step is at least `step` (rank -1 when it did
// not get there within `timeout_s`).
inline RankBeat beat_at_step(const fs::path& out_dir, int rank, int64_t step, double timeout_s) {
  RankBeat got;
  wait_until(
      [&] {
        for (const RankBeat& b : read_heartbeats((out_dir / "heartbeat").string()))
          if (b.rank == rank && b.step >= step) {
            got = b;
            return true;
          }
        return false;
      },
      timeout_s);
  return got;
}

inline const char* kMpirunWords = "mpirun --oversubscribe --mca btl self,vader";

// `switchyard run --ranks N` on the RunDir's corpus, as a shell command line (output to NAME.log).
inline std::string supervised_cmd(const RunDir& d, const std::string& name, int ranks, const std::string& sets,
                                  const std::string& env = "") {
  return "cd '" + d.path().string() + "' && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env +
         " exec '" SY_BINARY_DIR "/switchyard' run --ranks " + std::to_string(ranks) + " --launcher '" + kMpirunWords +
         "' '" SY_SOURCE_DIR "/tests/recipes/tiny-test.toml' --set data.train=train.tok --set data.val=val.tok"
         " --set train.out_dir=" + (d.path() / name).string() + " " + sets + " > '" + (d.path() / (name + ".log")).string() +
         "' 2>&1";
}

// Lines of a file.
inline std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

}  // namespace sy::testing
