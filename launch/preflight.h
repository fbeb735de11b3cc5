// What `switchyard run` and `switchyard sbatch` check before they start or write anything, each
// failure one ConfigError line naming the problem and the fix (exit code 2).
#pragma once

#include <string>

#include "config/recipe.h"

namespace sy {

// The world size `ranks` against the recipe's layout (trainer/run_context.h's checks).
void check_ranks_fit(const Recipe& r, int ranks, const std::string& origin);
// Creates out_dir if needed and proves it writable with a probe file it removes again; nothing
// already there is touched.
void check_out_dir_writable(const std::string& out_dir);
// Inside a Slurm allocation (SLURM_JOB_ID set): the task count it grants, after checking that the
// SLURM_* variables agree with each other; 0 outside one.
int allocation_tasks();

}  // namespace sy
