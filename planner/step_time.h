// The planner's step-time model: compute from FLOPs at a stated efficiency, tensor-, expert-,
// data- and pipeline-parallel traffic from bytes over NVLink or the network, and the pipeline
// bubble (docs/planner.md writes out each term and where it is known to be off).
#pragma once

#include "engine/model_config.h"
#include "planner/gpu_specs.h"
#include "planner/plan_layout.h"

namespace sy {

struct StepTime {
  double compute_s = 0;  // GEMMs and attention, recomputation included
  double tp_s = 0, ep_s = 0, dp_s = 0, pp_s = 0;  // communication on the critical path
  double bubble_s = 0;   // pipeline fill and drain
  double total_s = 0;
  double tokens_per_s = 0;
  double mfu = 0;        // model FLOPs (6 * active + attention; no recompute) over world * peak
};

StepTime predict_step_time(const ModelConfig& m, const PlanLayout& l, const GpuSpec& gpu,
                           const PlannerAssumptions& assume, Precision prec);

}  // namespace sy
