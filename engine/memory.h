// Memory accounting: every allocation a backend makes is tagged with a category (set by a scope
// around the allocating code) and tallied, current and peak, per category. The trainer reports
// each rank's peaks; tests compare them with what the layout predicts.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

namespace sy {

enum class MemCategory : uint8_t {
  Other,           // untagged: inputs, RoPE tables, test tensors
  Parameters,
  Gradients,       // accumulation buffers and reduced shards
  OptimizerState,
  Activations,     // what a transformer layer keeps for its backward pass (residual stream included)
  HeadActivations, // what the embedding, LM head and loss keep for the backward pass
  Workspace,       // scratch reused within a layer or shared by all layers
  Communication,   // staging buffers of collectives
  kCount
};
const char* mem_category_name(MemCategory c);

struct MemoryCounters {
  static constexpr int kN = int(MemCategory::kCount);
  std::array<int64_t, kN> current{}, peak{};
  int64_t total_current = 0, total_peak = 0;
  void add(MemCategory c, int64_t bytes);
  void reset_peaks();
};

// Owned by a backend; shared with the deleters of the storage it hands out, so that a tensor
// outliving its backend still releases its bytes into a live tally.
struct MemoryTally {
  std::shared_ptr<MemoryCounters> counters = std::make_shared<MemoryCounters>();
  MemCategory current = MemCategory::Other;
};

}  // namespace sy
