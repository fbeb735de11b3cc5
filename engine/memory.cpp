#include "engine/memory.h"

#include <algorithm>

namespace sy {

const char* mem_category_name(MemCategory c) {
  switch (c) {
    case MemCategory::Other: return "other";
    case MemCategory::Parameters: return "parameters";
    case MemCategory::Gradients: return "gradients";
    case MemCategory::OptimizerState: return "optimizer_state";
    case MemCategory::Activations: return "activations";
    case MemCategory::HeadActivations: return "head_activations";
    case MemCategory::Workspace: return "workspace";
    case MemCategory::Communication: return "communication";
    default: return "?";
  }
}

void MemoryCounters::add(MemCategory c, int64_t bytes) {
  int64_t& cur = current[int(c)];
  cur += bytes;
  peak[int(c)] = std::max(peak[int(c)], cur);
  total_current += bytes;
  total_peak = std::max(total_peak, total_current);
}

void MemoryCounters::reset_peaks() {
  peak = current;
  total_peak = total_current;
}

}  // namespace sy
