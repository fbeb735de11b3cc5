// The planner's search: every layout the engine accepts for a world size (trainer's
// check_layout, the grid's rules, TP inside one NVLink domain), its predicted per-GPU memory and
// step time, whether it fits, and the fewest GPUs on which any layout fits.
#pragma once

#include <cstdint>
#include <vector>

#include "config/recipe.h"
#include "planner/gpu_specs.h"
#include "planner/memory_model.h"
#include "planner/step_time.h"

namespace sy {

struct PlanRequest {
  Recipe recipe;   // the model ([model]; seq_len is replaced by seq) and its optimizer
  GpuSpec gpu;
  PlannerAssumptions assume;
  int64_t seq = 4096;
  int64_t global_batch = 256;  // sequences per step
  Precision prec = Precision::bf16();
};

struct PlanRow {
  PlanLayout layout;
  StageMemory worst;        // the stage whose GPU must hold the most
  int worst_stage = 0;
  int64_t activations_without_recompute = 0;  // the worst stage's, if each in-flight micro-batch kept its own
  double device_bytes = 0;  // worst.total() * (1 + fragmentation) + reserved
  bool fits = false;
  StepTime time;
};

// The rows for `world` GPUs, fitting ones first, each group fastest first. memory_minimal: only
// the options that never lower memory (ZeRO 1, sp whenever tp > 1, micro-batch 1), for the
// fewest-GPU search.
std::vector<PlanRow> plan_layouts(const PlanRequest& req, int world, bool memory_minimal = false);

// The first world size (1, 2, 4, then multiples of 8, up to max_world) with a fitting layout, and
// its rows; world 0 and no rows if none fits.
struct FewestGpus {
  int world = 0;
  std::vector<PlanRow> rows;
};
FewestGpus fewest_gpus(const PlanRequest& req, int max_world = 16384);

// The predictions for one given layout (fits or not): for comparing with a published run.
PlanRow plan_one(const PlanRequest& req, const PlanLayout& layout);

// The engine's layout rules (trainer's check_layout, as a launch meets them) and TP inside one
// NVLink domain: a ConfigError naming the rule the layout breaks.
void check_engine_layout(const PlanRequest& req, const PlanLayout& layout);

// The dispatch buffers' imbalance the planner assumes: the capacity factor when tokens are
// dropped at capacity, else the stated dropless bound.
double planned_imbalance(const PlanRequest& req);

}  // namespace sy
