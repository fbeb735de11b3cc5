#include "cli/schedule_commands.h"

#include <cstdio>
#include <stdexcept>
#include <string>

#include "engine/config_error.h"
#include "parallel/pipeline_schedule.h"

namespace sy {

std::unique_ptr<ScheduleCommand> add_schedule_command(CLI::App& app) {
  auto c = std::make_unique<ScheduleCommand>();
  // Upper bounds keep the printout and the simulation small; real pipelines are far below them.
  c->cmd = app.add_subcommand("schedule", "Print the 1F1B / interleaved 1F1B pipeline schedule and its simulated bubble");
  c->cmd->add_option("--pp", c->pp, "Pipeline stages (ranks)")->required()->type_name("P")->check(CLI::Range(1, 256));
  c->cmd->add_option("--vpp", c->vpp, "Virtual stages per rank (default 1: plain 1F1B)")->type_name("V")->check(CLI::Range(1, 64));
  c->cmd->add_option("--micro", c->micro, "Micro-batches per step")->required()->type_name("M")->check(CLI::Range(1, 4096));
  return c;
}

namespace {

// One text row per rank, one cell per time unit: "F3" starts forward of micro-batch 3 (its
// virtual stage after a colon when vpp > 1), a backward spans two cells "B3 --", "." is idle.
std::string timeline_row(const PipeSchedule& s, const PipeSimResult& sim, int r, PipeCost cost) {
  const int w = s.vpp > 1 ? 5 : 3;
  std::string row(size_t(sim.makespan) * w, ' ');
  for (int64_t t = 0; t < sim.makespan; ++t) row[size_t(t) * w] = '.';
  const auto& list = s.ranks[r];
  for (size_t i = 0; i < list.size(); ++i) {
    const PipeAction& a = list[i];
    if (a.op != PipeOp::Forward && a.op != PipeOp::Backward) continue;
    const int64_t t0 = sim.start[r][i];
    const int64_t len = a.op == PipeOp::Forward ? cost.forward : cost.backward;
    std::string label = (a.op == PipeOp::Forward ? "F" : "B") + std::to_string(a.micro);
    if (s.vpp > 1) label += ":" + std::to_string(a.vstage);
    std::string cell(size_t(len) * w, '-');
    cell.replace(0, label.size(), label);
    for (size_t k = label.size(); k < size_t(w) && k < cell.size(); ++k) cell[k] = ' ';
    if (cell.size() > label.size()) cell.back() = ' ';
    row.replace(size_t(t0) * w, cell.size(), cell);
  }
  while (!row.empty() && row.back() == ' ') row.pop_back();
  return row;
}

}  // namespace

int run_schedule_command(const ScheduleCommand& c) {
  if (!c.cmd->parsed()) return -1;
  PipeSchedule s;
  try {
    s = build_schedule(c.pp, c.vpp, c.micro);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
  const PipeCost cost;
  const PipeSimResult sim = simulate_schedule(s, cost);
  std::printf("# %s, pp=%d vpp=%d micro=%d; chunk v*pp+r on rank r, virtual stage v\n",
              c.vpp == 1 ? "1F1B" : "interleaved 1F1B", c.pp, c.vpp, c.micro);
  std::printf("# F<m>.<v> forward, B<m>.<v> backward, sa/ra send/receive activation, sg/rg gradient, >to <from\n");
  for (int r = 0; r < c.pp; ++r) {
    std::printf("rank %d:", r);
    for (const PipeAction& a : s.ranks[r]) std::printf(" %s", format_action(a).c_str());
    std::printf("\n");
  }
  if (!sim.ok) throw std::runtime_error("simulated schedule failed: " + sim.error);
  std::printf("# timeline (forward %lld unit, backward %lld units, transfers free)\n", (long long)cost.forward,
              (long long)cost.backward);
  for (int r = 0; r < c.pp; ++r) std::printf("rank %d: %s\n", r, timeline_row(s, sim, r, cost).c_str());
  const double formula = pipeline_bubble_formula(c.pp, c.vpp, c.micro);
  std::printf("# makespan %lld units; bubble formula (p-1)/(v*m+p-1) = %.4f\n", (long long)sim.makespan, formula);
  for (int r = 0; r < c.pp; ++r)
    std::printf("bubble rank %d: %.4f (busy %lld of %lld)\n", r, sim.idle_fraction[r], (long long)sim.busy[r],
                (long long)sim.makespan);
  return 0;
}

}  // namespace sy
