// The `schedule` subcommand: print a pipeline schedule (parallel/pipeline_schedule.h), its
// simulated timeline and each rank's bubble against the formula. Needs no recipe and no MPI.
#pragma once

#include <memory>

#include <CLI/CLI.hpp>

namespace sy {

struct ScheduleCommand {
  CLI::App* cmd = nullptr;
  int pp = 1, vpp = 1, micro = 1;
};

std::unique_ptr<ScheduleCommand> add_schedule_command(CLI::App& app);
// Runs it if parsed; -1 when it was not given. Bad sizes throw ConfigError (exit 2).
int run_schedule_command(const ScheduleCommand& c);

}  // namespace sy
