// Range and choice checks of the recipe sections other than [model] (ModelConfig::validate does
// that one); each throws ConfigError naming the key and the fix.
#pragma once

#include <string>

#include "config/recipe.h"

namespace sy {

void validate_optim(const OptimConfig& o);
void validate_data(const DataConfig& d);
void validate_train(const TrainConfig& t);
void validate_parallel(const ParallelConfig& p);
void validate_launch(const LaunchConfig& l);
// Every section, then the checks that span sections.
void validate_recipe(const Recipe& r);

// Shortest text that reads back as the same double ("0.003", "1e-05").
std::string format_number(double v);

}  // namespace sy
