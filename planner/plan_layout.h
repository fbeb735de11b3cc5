// A candidate layout as the planner sees it: the grid sizes, the ZeRO stage, sequence
// parallelism and how a step's batch is cut into micro-batches. It maps one to one onto a
// recipe's [parallel] and [train] keys (to_recipe_sets), so that a planned layout is a runnable one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct PlanLayout {
  int tp = 1, pp = 1, vpp = 1, dp = 1, ep = 1, etp = 1, zero = 0;
  bool sp = false;
  int64_t micro_batch = 1;    // sequences per micro-batch (train.micro_batch)
  int64_t micro_batches = 1;  // micro-batches per step per pipeline (train.grad_accum)
  std::vector<int64_t> pp_layers;  // empty: balanced
  int world() const { return tp * pp * dp; }
  int edp() const { return tp * dp / (ep * etp); }
  // The --set overrides that select this layout: "parallel.tp=2 parallel.pp=4 ...".
  std::vector<std::string> to_recipe_sets() const;
  std::string text() const;  // "tp2 pp4 vpp2 dp2 ep8 etp1 zero1 sp mb1 x16"
};

// Bytes per element: activations (and the bf16 weight copy when it differs) and parameters,
// gradients and optimizer moments (float32 master state under bf16).
struct Precision {
  int act = 4, param = 4;
  static Precision f32() { return {4, 4}; }
  static Precision bf16() { return {2, 4}; }
};

}  // namespace sy
