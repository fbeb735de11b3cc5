#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace sy {

double learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps) {
  if (cfg.warmup_steps > 0 && step < cfg.warmup_steps)
    return cfg.lr * double(step + 1) / double(cfg.warmup_steps);
  if (cfg.schedule == "constant") return cfg.lr;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - cfg.warmup_steps - 1);
  const double progress = std::min(1.0, double(step - cfg.warmup_steps) / double(decay_steps));
  return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace sy
