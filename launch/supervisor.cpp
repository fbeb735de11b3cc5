#include "launch/supervisor.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "config/recipe.h"
#include "engine/config_error.h"
#include "launch/heartbeats.h"
#include "launch/incidents.h"
#include "launch/preflight.h"
#include "launch/rank_job.h"
#include "trainer/exit_codes.h"

namespace sy {

namespace {

// The signal the supervisor was sent (0: none); handlers may only store to a lock-free atomic.
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

constexpr double kStaleS = 3.0;           // a heartbeat rewritten every 0.5 s and this old: the process is stopped
constexpr double kDeathGraceS = 10.0;     // a launcher that has not ended its job this long after a rank died is made to
constexpr double kStopGraceS = 10.0;      // how long the launcher gets to end its job before it is killed

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool is_srun(const std::vector<std::string>& launcher) {
  return std::filesystem::path(launcher.at(0)).filename() == "srun";
}

std::string host_name() {
  char h[256] = {};
  gethostname(h, sizeof h - 1);
  return h;
}

// How a rank process on this host ended: nullopt while it lives; "" when it is gone without a
// trace; its cause while it is a zombie its launcher has not reaped yet (/proc/PID/stat's last
// field is then its wait status).
std::optional<std::string> process_end(long pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return std::string();
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return std::string();
  const char state = text[paren + 2];
  if (state != 'Z' && state != 'X') return std::nullopt;
  std::istringstream fields(text.substr(paren + 2));
  std::string last;
  for (std::string f; fields >> f;) last = f;
  try {
    const int st = std::stoi(last);
    if (WIFSIGNALED(st)) return "killed by signal " + signal_name(WTERMSIG(st));
    if (WIFEXITED(st)) return "exited with code " + std::to_string(WEXITSTATUS(st));
  } catch (const std::exception&) {
  }
  return std::string();
}

int64_t newest_good_step(const std::string& out_dir) {
  const std::string dir = find_resume_checkpoint(out_dir);
  return dir.empty() ? 0 : CheckpointReader(dir).step();
}

std::string quoted_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) s += (s.empty() ? "" : " ") + (a.find(' ') == std::string::npos ? a : "'" + a + "'");
  return s;
}

struct Attempt {
  int exit_code = 0;             // the launcher's, 128 + signal when killed
  std::optional<Incident> failure;
};

// Runs one attempt to its end: success, preemption, or a failure worth an incident.
Attempt watch(RankJob& job, const std::string& hb_dir, double hang_timeout_s) {
  Attempt a;
  const std::string me = host_name();
  int64_t last_step = -1;
  auto last_progress = Clock::now();
  std::optional<RankDeath> seen_dead;
  auto seen_dead_at = Clock::now();
  bool forwarded = false;
  std::vector<RankBeat> beats;
  for (;;) {
    job.pump(200);
    if (const int sig = g_signal.exchange(0)) {
      std::printf("switchyard run: got signal %s; asking the ranks to save and stop (SIGUSR1)\n", signal_name(sig).c_str());
      std::fflush(stdout);
      job.signal_launcher(SIGUSR1);
      forwarded = true;
    }
    beats = read_heartbeats(hb_dir);
    const double now = unix_now();
    int64_t step = -1;
    for (const RankBeat& b : beats) step = std::max(step, b.step);
    if (step != last_step) {
      last_step = step;
      last_progress = Clock::now();
    }
    if (auto st = job.exited()) {
      a.exit_code = WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
      if (a.exit_code == kExitOk || a.exit_code == kExitPreempted || a.exit_code == kExitUsage) return a;
      if (forwarded) return a;  // stopped on request: not an incident
      Incident inc;
      if (job.reported_death()) {
        inc.rank = job.reported_death()->rank;
        inc.cause = job.reported_death()->cause;
      } else if (seen_dead) {
        inc.rank = seen_dead->rank;
        inc.cause = seen_dead->cause;
      } else {
        inc.cause = "ended: the launcher exited with code " + std::to_string(a.exit_code);
      }
      inc.step_reached = std::max<int64_t>(0, last_step);
      a.failure = inc;
      return a;
    }
    // A rank process on this host that vanished before finishing: its launcher should end the job
    // within seconds; if it does not, the supervisor does.
    if (!seen_dead)
      for (const RankBeat& b : beats)
        if (b.host == me && b.phase != "finished" && b.pid > 0) {
          const std::optional<std::string> end = process_end(b.pid);
          if (!end) continue;
          seen_dead = RankDeath{b.rank, end->empty() ? "died (its process is gone)" : *end};
          seen_dead_at = Clock::now();
          break;
        }
    std::vector<long> pids;
    for (const RankBeat& b : beats)
      if (b.host == me) pids.push_back(b.pid);
    if (seen_dead && since(seen_dead_at) > kDeathGraceS) {
      job.stop(pids, kStopGraceS);
      continue;  // exited() now reports it
    }
    if (!forwarded && since(last_progress) > hang_timeout_s) {
      Incident inc;
      inc.rank = suspect_of_hang(beats, now, kStaleS);
      char buf[128];
      std::snprintf(buf, sizeof buf, "hung: no rank finished a step for %.1f s (launch.hang_timeout_s=%g)",
                    since(last_progress), hang_timeout_s);
      inc.cause = buf;
      for (const RankBeat& b : beats) {
        inc.ranks.push_back(describe(b, now, kStaleS));
        if (b.rank == inc.rank) inc.cause += "; it stood at " + describe(b, now, kStaleS);
      }
      if (beats.empty()) inc.cause += "; no rank wrote a heartbeat (stuck starting up?)";
      inc.step_reached = std::max<int64_t>(0, last_step);
      for (const std::string& line : inc.ranks) std::printf("switchyard run: hang: %s\n", line.c_str());
      std::fflush(stdout);
      job.stop(pids, kStopGraceS);
      a.exit_code = -1;
      a.failure = inc;
      return a;
    }
  }
}

}  // namespace

int run_supervised(const RunOptions& o) {
  const Recipe r = load_recipe(o.recipe, o.sets);
  const int granted = allocation_tasks();
  const int ranks = o.ranks > 0 ? o.ranks : granted > 0 ? granted : 1;
  if (granted > 0 && ranks > granted)
    throw ConfigError("--ranks " + std::to_string(ranks) + " exceeds the " + std::to_string(granted) +
                      " tasks of this Slurm allocation (SLURM_NTASKS); ask for more tasks or pass --ranks " +
                      std::to_string(granted));
  check_ranks_fit(r, ranks, "--ranks " + std::to_string(ranks));
  const std::string out_dir = r.train.out_dir;
  check_out_dir_writable(out_dir);
  std::vector<std::string> launcher = words(o.launcher);
  if (launcher.empty()) launcher = {granted > 0 ? "srun" : "mpirun"};

  const std::string hb_dir = out_dir + "/heartbeat", incidents = out_dir + "/incidents.jsonl";
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) ::signal(sig, on_signal);
  std::vector<std::string> summary;
  for (int64_t attempt = 0;; ++attempt) {
    std::error_code ec;
    std::filesystem::remove_all(hb_dir, ec);  // the last attempt's ranks are gone; their beats would mislead
    std::vector<std::string> argv = launcher;
    if (is_srun(launcher)) {
      for (const char* a : {"--kill-on-bad-exit=1", "--mpi=pmix"}) argv.push_back(a);
      argv.push_back("--ntasks=" + std::to_string(ranks));
    } else {
      argv.insert(argv.end(), {"-x", "SY_RUN_ATTEMPT", "-np", std::to_string(ranks)});
    }
    argv.insert(argv.end(), {o.self_exe, "train", o.recipe});
    for (const std::string& s : o.sets) argv.insert(argv.end(), {"--set", s});
    // A restart always resumes from the newest checkpoint that verifies, whatever the first
    // attempt was told.
    if (attempt > 0) argv.insert(argv.end(), {"--set", "checkpoint.resume=auto"});
    std::printf("switchyard run: attempt %ld: %s\n", long(attempt + 1), quoted_command(argv).c_str());
    std::fflush(stdout);

    Attempt a;
    {
      RankJob job(argv, {"SY_RUN_ATTEMPT=" + std::to_string(attempt)});
      a = watch(job, hb_dir, r.launch.hang_timeout_s);
    }
    if (!a.failure) {
      if (a.exit_code == kExitOk) std::printf("switchyard run: finished after %ld restart(s)\n", long(attempt));
      if (a.exit_code == kExitPreempted)
        std::printf("switchyard run: preempted; the ranks saved a checkpoint (exit %d: requeue to resume)\n", kExitPreempted);
      std::fflush(stdout);
      return a.exit_code == kExitOk || a.exit_code == kExitPreempted || a.exit_code == kExitUsage ? a.exit_code
                                                                                                    : kExitFailure;
    }
    Incident inc = *a.failure;
    inc.time = unix_now();
    inc.resume_step = newest_good_step(out_dir);
    const bool give_up = attempt >= r.launch.max_restarts;
    inc.restart = give_up ? 0 : attempt + 1;
    append_incident(incidents, inc);
    summary.push_back(readable(inc));
    if (give_up) {
      std::string line;
      for (size_t k = 0; k < summary.size(); ++k) line += (k ? "; " : "") + std::to_string(k + 1) + ". " + summary[k];
      std::fflush(stdout);
      std::fprintf(stderr,
                   "switchyard run: error: gave up after %ld restart(s) (launch.max_restarts=%ld): %s; the last good "
                   "checkpoint is step %ld under %s/checkpoints; fix the cause, then rerun to resume from it\n",
                   long(attempt), long(r.launch.max_restarts), line.c_str(), long(inc.resume_step), out_dir.c_str());
      return kExitRestartsUsedUp;
    }
    const double wait_s = std::min(r.launch.backoff_max_s, r.launch.backoff_s * std::pow(2.0, double(attempt)));
    std::printf("switchyard run: incident: %s; restart %ld of %ld in %.1f s\n", readable(inc).c_str(), long(attempt + 1),
                long(r.launch.max_restarts), wait_s);
    std::fflush(stdout);
    const auto until = Clock::now() + std::chrono::duration<double>(wait_s);
    while (Clock::now() < until) {
      if (g_signal.load()) {  // preempted while waiting: the checkpoint on disk is the one to resume from
        std::printf("switchyard run: got a signal while waiting to restart; stopping (exit %d: requeue to resume)\n",
                    kExitPreempted);
        return kExitPreempted;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

}  // namespace sy
