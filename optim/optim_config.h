// Optimizer, clipping and learning-rate schedule settings: the recipe's [optim] section.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

struct OptimConfig {
  std::string name = "adamw";  // adamw | sgd (plain SGD, no momentum: exposes gradient-scale bugs)
  double lr = 3e-3;
  double min_lr = 3e-4;
  int64_t warmup_steps = 100;
  std::string schedule = "cosine";  // cosine (warm-up then cosine to min_lr) | constant (warm-up then lr)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // global L2 norm; 0 disables clipping
  // Weight decay applies to matrices only unless these are set.
  bool decay_norms = false;
  bool decay_embeddings = false;
};

}  // namespace sy
