// What a training process knows about the job it is part of: its communicators and grid.
// Built once at start-up from the launch environment and the recipe's [parallel] section.
#pragma once

#include <memory>

#include "config/recipe.h"
#include "parallel/comm.h"
#include "parallel/grid.h"
#include "parallel/launch_env.h"

namespace sy {

struct RunContext {
  RunContext() = default;
  RunContext(RunContext&&) = default;
  // Frees the communicators, then finalizes MPI (skipped after a timeout, when a peer is gone).
  ~RunContext();
  LaunchEnv env;
  std::unique_ptr<Communicator> world;
  ProcessGrid grid;
  std::unique_ptr<Communicator> dp;   // the data-parallel group
  std::unique_ptr<Communicator> tp;   // the tensor-parallel group
  std::unique_ptr<Communicator> ep;   // the expert-parallel group (tokens are exchanged in it)
  std::unique_ptr<Communicator> edp;  // the expert-data-parallel group (expert gradients reduce in it)
  std::unique_ptr<Communicator> etp;  // the expert-tensor-parallel group (it splits each expert's matrices)
  std::unique_ptr<Communicator> pp;   // the pipeline group: rank r holds stage r
  // Tied embeddings under pipeline parallelism, on the first and last stage only: the two copies
  // of the table (null elsewhere and without stages).
  std::unique_ptr<Communicator> embed;
  // This rank holds the last stage's copy of a tied embedding (the first stage's is the one saved
  // and counted in the gradient norm).
  bool holds_tied_copy() const { return embed && pp->rank() > 0; }
  bool is_rank0() const { return world->rank() == 0; }
};

// The checks of the recipe's layout against a world size that need no communicator (ConfigError
// naming the key and the fix); make_run_context runs them, and so does `switchyard run` before it
// launches anything.
void check_layout(const Recipe& r, int world);

// Chooses MPI when launched with several ranks, else the single-process communicator; checks
// the layout (ConfigError naming the key and the fix).
RunContext make_run_context(const Recipe& r);

}  // namespace sy
