#include "cli/launch_commands.h"

#include <filesystem>
#include <limits>

namespace sy {

namespace {
std::string self_exe() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("switchyard") : p.string();
}
}  // namespace

std::unique_ptr<LaunchCommands> add_launch_commands(CLI::App& app, const SetOptionAdder& add_set) {
  auto c = std::make_unique<LaunchCommands>();
  const auto positive = CLI::Range(1, std::numeric_limits<int>::max());

  c->run = app.add_subcommand("run", "Train under a supervisor that restarts the job after a dead or hung rank");
  c->run->add_option("RECIPE", c->run_opts.recipe, "Recipe file (TOML)")->required();
  c->run->add_option("--ranks", c->run_opts.ranks, "Ranks to start (default: SLURM_NTASKS inside an allocation, else 1)")
      ->type_name("N")
      ->check(positive);
  c->run->add_option("--launcher", c->run_opts.launcher,
                     "Launcher command line (default: srun inside a Slurm allocation, else mpirun), e.g. "
                     "\"mpirun --hostfile hosts\"")
      ->type_name("CMD");
  add_set(c->run, c->run_opts.sets);

  SbatchOptions& s = c->sbatch_opts;
  c->sbatch = app.add_subcommand("sbatch", "Write a Slurm batch script for a recipe (and submit it with --submit)");
  c->sbatch->add_option("RECIPE", s.recipe, "Recipe file (TOML)")->required();
  c->sbatch->add_option("--nodes", s.nodes, "Nodes (default 1)")->type_name("N")->check(positive);
  c->sbatch->add_option("--tasks-per-node", s.tasks_per_node, "Ranks per node (default 1)")->type_name("T")->check(positive);
  c->sbatch->add_option("--gpus-per-node", s.gpus_per_node, "GPUs per node; one task per GPU")->type_name("G")->check(positive);
  c->sbatch->add_option("--time", s.time, "Time limit (default 01:00:00)")->type_name("HH:MM:SS");
  c->sbatch->add_option("--partition", s.partition, "Slurm partition")->type_name("P");
  c->sbatch->add_option("--job-name", s.job_name, "Job name, which also names out_dir (default: the recipe's name)")
      ->type_name("NAME");
  c->sbatch->add_option("--script", s.script, "Where to write the script (default: <out_dir>/<job name>.sbatch)")
      ->type_name("FILE");
  c->sbatch->add_flag("--submit", s.submit, "Submit the script with sbatch");
  add_set(c->sbatch, s.sets);
  return c;
}

int run_launch_command(LaunchCommands& c) {
  if (c.run->parsed()) {
    c.run_opts.self_exe = self_exe();
    return run_supervised(c.run_opts);
  }
  if (c.sbatch->parsed()) {
    c.sbatch_opts.self_exe = self_exe();
    c.sbatch_opts.workdir = std::filesystem::current_path().string();
    return run_sbatch(c.sbatch_opts);
  }
  return -1;
}

}  // namespace sy
