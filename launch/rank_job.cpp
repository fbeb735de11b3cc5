#include "launch/rank_job.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <regex>
#include <stdexcept>
#include <thread>

namespace sy {

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
}

RankJob::RankJob(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error(std::string("cannot create a pipe: ") + std::strerror(errno));
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error(std::string("cannot fork the launcher: ") + std::strerror(errno));
  if (pid_ == 0) {
    // Its own process group: the supervisor can end the launcher and everything it forked, and a
    // Ctrl-C at the terminal reaches the supervisor, which decides what the ranks get.
    setpgid(0, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "switchyard run: error: cannot start %s (%s); install it or pass --launcher\n", args[0],
                 std::strerror(errno));
    _exit(127);
  }
  setpgid(pid_, pid_);  // also here, so it holds before either side runs on
  close(fds[1]);
  out_fd_ = fds[0];
  fcntl(out_fd_, F_SETFL, O_NONBLOCK);
}

RankJob::~RankJob() {
  if (!status_) stop({}, 5);
  if (out_fd_ >= 0) close(out_fd_);
}

void RankJob::pump(int wait_ms) {
  if (out_fd_ < 0) {
    if (wait_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    return;
  }
  pollfd p{out_fd_, POLLIN, 0};
  if (poll(&p, 1, wait_ms) <= 0) return;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(out_fd_, buf, sizeof buf);
    if (n == 0) {  // every writer is gone
      close(out_fd_);
      out_fd_ = -1;
      break;
    }
    if (n < 0) break;
    std::fwrite(buf, 1, size_t(n), stdout);
    partial_.append(buf, size_t(n));
    for (size_t nl; (nl = partial_.find('\n')) != std::string::npos;) {
      scan(partial_.substr(0, nl));
      partial_.erase(0, nl + 1);
    }
  }
  std::fflush(stdout);
}

void RankJob::scan(const std::string& line) {
  if (death_) return;
  static const std::regex mpirun_signal(R"(process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+))");
  static const std::regex srun_task(R"(srun: error: \S+: tasks? (\d+)[^:]*: (.*))");
  static const std::regex mpirun_name(R"(Process name: +\[\[\d+,\d+\],(\d+)\])");
  static const std::regex mpirun_code(R"(Exit code: +(\d+))");
  std::smatch m;
  if (std::regex_search(line, m, mpirun_signal)) {
    death_ = RankDeath{std::stoi(m[1]), "killed by signal " + signal_name(std::stoi(m[2]))};
  } else if (std::regex_search(line, m, srun_task)) {
    std::string what = m[2];
    if (what.rfind("Exited with exit code ", 0) == 0) what = "exited with code " + what.substr(22);
    else what = "ended: " + what;
    death_ = RankDeath{std::stoi(m[1]), what};
  } else if (std::regex_search(line, m, mpirun_name)) {
    pending_exit_rank_ = std::stoi(m[1]);
  } else if (pending_exit_rank_ >= 0 && std::regex_search(line, m, mpirun_code)) {
    death_ = RankDeath{pending_exit_rank_, "exited with code " + std::string(m[1])};
  }
}

std::optional<int> RankJob::exited() {
  if (status_) return status_;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    status_ = st;
    pump(0);  // what it wrote last
  }
  return status_;
}

void RankJob::signal_launcher(int sig) {
  if (!status_) kill(pid_, sig);
}

void RankJob::stop(const std::vector<long>& rank_pids, double grace_s) {
  for (long p : rank_pids)
    if (p > 0) kill(pid_t(p), SIGKILL);
  if (!status_) kill(pid_, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  while (!exited() && std::chrono::steady_clock::now() < until) pump(100);
  killpg(pid_, SIGKILL);  // whatever the launcher left behind in its group
  if (!status_) {
    int st = 0;
    waitpid(pid_, &st, 0);
    status_ = st;
  }
  pump(0);
}

}  // namespace sy
