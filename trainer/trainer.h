// The training loop and evaluation entry points the CLI calls.
#pragma once

#include <cstdint>
#include <string>

#include "config/recipe.h"

namespace sy {

// Trains the recipe; returns the process exit code (0 on success, also after a clean stop).
int run_training(const Recipe& r);
// Mean loss of the weights over the first `windows` windows of a token file, read in order.
int run_eval(const Recipe& r, const std::string& weights, const std::string& data, int64_t windows);

}  // namespace sy
