// The `run` (supervised launch) and `sbatch` (Slurm batch script) subcommands.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "launch/sbatch.h"
#include "launch/supervisor.h"

namespace sy {

struct LaunchCommands {
  CLI::App* run = nullptr;
  CLI::App* sbatch = nullptr;
  RunOptions run_opts;
  SbatchOptions sbatch_opts;
};

using SetOptionAdder = std::function<CLI::Option*(CLI::App*, std::vector<std::string>&)>;

std::unique_ptr<LaunchCommands> add_launch_commands(CLI::App& app, const SetOptionAdder& add_set);
// Runs the parsed one; -1 when neither was given.
int run_launch_command(LaunchCommands& c);

}  // namespace sy
