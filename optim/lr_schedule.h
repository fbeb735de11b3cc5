// Learning rate at an optimizer step: linear warm-up from lr/warmup to lr over `warmup_steps`,
// then cosine decay to min_lr at the last step (schedule "cosine") or constant (schedule "constant").
#pragma once

#include <cstdint>

#include "optim/optim_config.h"

namespace sy {

// `step` counts from 0; `total_steps` is the run's length.
double learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps);

}  // namespace sy
