#include "launch/sbatch.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "engine/config_error.h"
#include "launch/preflight.h"
#include "trainer/exit_codes.h"

namespace sy {

namespace {

// Single-quoted for the shell.
std::string sh(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

long slurm_time_seconds(const std::string& t) {
  std::smatch m;
  auto n = [&](int i) { return m[i].matched && m[i].length() ? std::stol(m[i]) : 0L; };
  if (std::regex_match(t, m, std::regex(R"((\d+)-(\d+)(?::(\d+)(?::(\d+))?)?)")))
    return n(1) * 86400 + n(2) * 3600 + n(3) * 60 + n(4);
  if (std::regex_match(t, m, std::regex(R"((\d+):(\d+):(\d+))"))) return n(1) * 3600 + n(2) * 60 + n(3);
  if (std::regex_match(t, m, std::regex(R"((\d+):(\d+))"))) return n(1) * 60 + n(2);
  if (std::regex_match(t, m, std::regex(R"((\d+))"))) return n(1) * 60;
  throw ConfigError("--time " + t + " is not a Slurm time limit; write HH:MM:SS, MM:SS, minutes or D-HH:MM:SS");
}

std::string sbatch_script(const SbatchOptions& o, const Recipe& r, const std::string& out_dir) {
  const std::string name = o.job_name.empty() ? r.name : o.job_name;
  std::string s;
  s += "#!/bin/bash\n";
  s += "# Written by `switchyard sbatch` for " + o.recipe + ". Submit it again as it is to continue: the job\n";
  s += "# resumes from the latest checkpoint under its out_dir (docs/launch.md).\n";
  s += "#SBATCH --job-name=" + name + "\n";
  s += "#SBATCH --nodes=" + std::to_string(o.nodes) + "\n";
  s += "#SBATCH --ntasks-per-node=" + std::to_string(o.tasks_per_node) + "\n";
  if (o.gpus_per_node > 0) s += "#SBATCH --gpus-per-node=" + std::to_string(o.gpus_per_node) + "\n";
  s += "#SBATCH --time=" + o.time + "\n";
  if (!o.partition.empty()) s += "#SBATCH --partition=" + o.partition + "\n";
  s += "#SBATCH --requeue\n";
  s += "#SBATCH --open-mode=append\n";
  s += "#SBATCH --signal=B:USR1@" + std::to_string(r.launch.preempt_grace_s) + "\n";
  s += "#SBATCH --output=" + out_dir + "/slurm-%x.out\n";
  s += "set -u\n";
  s += "cd " + sh(o.workdir) + " || exit 1\n";
  s += "echo \"switchyard sbatch: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, start $(date -u +%FT%TZ), "
       "restart ${SLURM_RESTART_COUNT:-0}\"\n";
  s += "# One task per GPU; the ranks read their place from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID.\n";
  s += "marker=" + sh(out_dir + "/" + kPreemptMarker) + "\n";
  s += "rm -f \"$marker\"\n";
  s += "srun --kill-on-bad-exit=1 --mpi=pmix " + sh(o.self_exe) + " train " + sh(o.recipe);
  for (const std::string& set : o.sets) s += " --set " + sh(set);
  s += " --set " + sh("train.out_dir=" + out_dir) + " &\n";
  s += "step=$!\n";
  s += "# Slurm's warning (USR1, to this shell only: B:) goes on to the ranks, which save and exit 75.\n";
  s += "trap 'echo \"switchyard sbatch: USR1: asking the ranks to save and stop\"; kill -USR1 $step' USR1 TERM\n";
  s += "# wait returns early when a trapped signal arrives: wait again until the step has ended.\n";
  s += "while :; do\n  wait $step\n  rc=$?\n  kill -0 $step 2>/dev/null || break\ndone\n";
  s += "# Rank 0 leaves the marker after the preemption checkpoint: srun may report a rank it killed\n";
  s += "# (--kill-on-bad-exit) rather than the 75.\n";
  s += "if [ $rc -eq 75 ] || [ -f \"$marker\" ]; then\n";
  s += "  echo \"switchyard sbatch: preempted with a checkpoint saved; requeueing job $SLURM_JOB_ID\"\n";
  s += "  scontrol requeue $SLURM_JOB_ID\n  exit 0\nfi\n";
  s += "echo \"switchyard sbatch: the step ended with exit code $rc\"\n";
  s += "exit $rc\n";
  return s;
}

int run_sbatch(SbatchOptions o) {
  namespace fs = std::filesystem;
  if (o.nodes < 1) throw ConfigError("--nodes " + std::to_string(o.nodes) + " must be at least 1");
  if (o.gpus_per_node > 0) o.tasks_per_node = o.gpus_per_node;  // one task per GPU
  if (o.tasks_per_node < 1) throw ConfigError("--tasks-per-node " + std::to_string(o.tasks_per_node) + " must be at least 1");
  const Recipe r = load_recipe(o.recipe, o.sets);  // errors name the path as given
  o.recipe = fs::absolute(o.recipe).string();
  const int ranks = o.nodes * o.tasks_per_node;
  check_ranks_fit(r, ranks, "--nodes " + std::to_string(o.nodes) + " x --tasks-per-node " + std::to_string(o.tasks_per_node) +
                                " = " + std::to_string(ranks) + " ranks");
  const long limit = slurm_time_seconds(o.time);
  if (limit <= r.launch.preempt_grace_s)
    throw ConfigError("--time " + o.time + " is not longer than launch.preempt_grace_s=" +
                      std::to_string(r.launch.preempt_grace_s) + " s, so the job would be warned as it starts; "
                      "raise --time or lower launch.preempt_grace_s");
  // A stable out_dir per job name: the requeued job (and a resubmitted script) finds its checkpoints.
  const std::string name = o.job_name.empty() ? r.name : o.job_name;
  const std::string out_dir = fs::absolute(r.train.out_dir == "runs/" + r.name ? "runs/" + name : r.train.out_dir).string();
  check_out_dir_writable(out_dir);
  if (o.script.empty()) o.script = out_dir + "/" + name + ".sbatch";
  {
    std::ofstream f(o.script);
    f << sbatch_script(o, r, out_dir);
    if (!f.flush()) throw ConfigError(o.script + ": cannot write the batch script; choose another --script path");
  }
  fs::permissions(o.script, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  std::printf("switchyard sbatch: wrote %s (%d node(s) x %d task(s), --time %s, out_dir %s)\n", o.script.c_str(), o.nodes,
              o.tasks_per_node, o.time.c_str(), out_dir.c_str());
  std::fflush(stdout);
  if (!o.submit) return 0;
  const int status = std::system(("sbatch " + sh(o.script)).c_str());
  if (status != 0) {
    std::fprintf(stderr, "switchyard: error: sbatch %s failed (status %d); check that Slurm is reachable (sinfo)\n",
                 o.script.c_str(), status);
    return 1;
  }
  return 0;
}

}  // namespace sy
