// The local half of token dispatch: from the router's choices to a permutation that groups the
// (token, slot) assignments by expert, with capacity drops applied. Pure integer bookkeeping on
// the host; the data movement it describes is done by the backend's gather/combine ops, and by a
// communicator's all-to-all when experts live on other ranks.
//
// Capacity rule (capacity_factor > 0), per micro-batch of N tokens:
//   capacity = ceil(capacity_factor * N * top_k / n_experts)
// Assignments are taken in priority order: slot j first (every token's first choice before any
// second choice), then token index n; each expert keeps its first `capacity` assignments and
// drops the rest. The order is deterministic and does not depend on how tokens are sharded.
#pragma once

#include <cstdint>
#include <vector>

namespace sy {

struct DispatchPlan {
  int64_t n_tokens = 0, top_k = 0, n_experts = 0;
  int64_t capacity = -1;            // -1: dropless
  std::vector<int32_t> src_rows;    // [M] token of each permuted row; rows grouped by expert
  std::vector<int32_t> slot_rows;   // [N * k] permuted row of (token n, slot j), -1 if dropped
  std::vector<int64_t> offsets;     // [E + 1] expert e owns permuted rows [offsets[e], offsets[e+1])
  std::vector<int64_t> routed;      // [E] assignments chosen by the router, before drops
  int64_t dropped = 0;              // assignments dropped for capacity
  int64_t rows() const { return offsets.empty() ? 0 : offsets.back(); }
};

// A 64-bit fingerprint (FNV-1a) of which assignments were dropped: the flat indices n * k + j
// with slot_rows == -1, in order. Equal plans of equal micro-batches give equal digests, so runs
// in different layouts can show that they dropped exactly the same tokens.
uint64_t dropped_digest(const DispatchPlan& p);

// The part of a micro-batch's plan that concerns its tokens [first, first + count) (a tensor-
// parallel rank routes only its own rows, but capacity drops are decided over the whole
// micro-batch, exactly as one rank decides them): the kept rows of those tokens, grouped by
// expert in the same order, with token indices relative to `first`. routed, dropped and capacity
// stay the whole micro-batch's.
DispatchPlan restrict_plan(const DispatchPlan& full, int64_t first, int64_t count);

int64_t expert_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k, int64_t n_experts);

// idx: [N, k] expert ids from the router.
DispatchPlan make_dispatch_plan(const int32_t* idx, int64_t n_tokens, int64_t top_k, int64_t n_experts,
                                double capacity_factor);

}  // namespace sy
