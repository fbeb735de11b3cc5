// `switchyard plan RECIPE --gpu h100 [--gpus N] [--seq L] [--global-batch B] [--layout ...]`:
// the fewest GPUs that can train the recipe's model and the fastest layouts at a GPU count,
// each with predicted per-GPU memory by category and step time (planner/, docs/planner.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace sy {

struct PlanCommand {
  CLI::App* cmd = nullptr;
  std::string recipe, gpu, layout, gpu_specs;
  int gpus = 0, top = 8;
  int64_t seq = 0, global_batch = 256;
};

std::unique_ptr<PlanCommand> add_plan_command(CLI::App& app);
// Runs it if parsed; -1 when it was not given. Bad input throws ConfigError (exit 2).
int run_plan_command(const PlanCommand& c);

}  // namespace sy
