#include "engine/layers/dispatch_plan.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace sy {

int64_t expert_capacity(double capacity_factor, int64_t n_tokens, int64_t top_k, int64_t n_experts) {
  if (capacity_factor <= 0) return -1;
  // The product is formed in double; a tiny epsilon keeps exact integers (e.g. 1.0 * 4096 / 8)
  // from rounding up through floating-point noise.
  const double exact = capacity_factor * double(n_tokens) * double(top_k) / double(n_experts);
  return static_cast<int64_t>(std::ceil(exact - 1e-9));
}

uint64_t dropped_digest(const DispatchPlan& p) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < p.slot_rows.size(); ++i) {
    if (p.slot_rows[i] >= 0) continue;
    for (int b = 0; b < 8; ++b) h = (h ^ ((uint64_t(i) >> (8 * b)) & 0xff)) * 0x100000001b3ull;
  }
  return h;
}

DispatchPlan restrict_plan(const DispatchPlan& full, int64_t first, int64_t count) {
  DispatchPlan p;
  p.n_tokens = count;
  p.top_k = full.top_k;
  p.n_experts = full.n_experts;
  p.capacity = full.capacity;
  p.routed = full.routed;
  p.dropped = full.dropped;
  p.offsets.assign(full.n_experts + 1, 0);
  std::vector<int32_t> local_row(full.src_rows.size(), -1);
  for (int64_t e = 0; e < full.n_experts; ++e) {
    for (int64_t r = full.offsets[e]; r < full.offsets[e + 1]; ++r) {
      const int64_t t = full.src_rows[r];
      if (t < first || t >= first + count) continue;
      local_row[r] = int32_t(p.src_rows.size());
      p.src_rows.push_back(int32_t(t - first));
    }
    p.offsets[e + 1] = int64_t(p.src_rows.size());
  }
  p.slot_rows.resize(count * full.top_k);
  for (int64_t i = 0; i < count * full.top_k; ++i) {
    const int32_t r = full.slot_rows[first * full.top_k + i];
    p.slot_rows[i] = r < 0 ? -1 : local_row[r];
  }
  return p;
}

DispatchPlan make_dispatch_plan(const int32_t* idx, int64_t n_tokens, int64_t top_k, int64_t n_experts,
                                double capacity_factor) {
  DispatchPlan p;
  p.n_tokens = n_tokens;
  p.top_k = top_k;
  p.n_experts = n_experts;
  p.capacity = expert_capacity(capacity_factor, n_tokens, top_k, n_experts);
  p.routed.assign(n_experts, 0);
  p.slot_rows.assign(n_tokens * top_k, -1);

  // Pass 1: rank of each assignment inside its expert, in priority order (slot, then token).
  std::vector<int64_t> kept(n_experts, 0);
  std::vector<int64_t> rank(n_tokens * top_k, -1);
  for (int64_t j = 0; j < top_k; ++j) {
    for (int64_t n = 0; n < n_tokens; ++n) {
      const int32_t e = idx[n * top_k + j];
      if (e < 0 || e >= n_experts)
        throw std::out_of_range("router chose expert " + std::to_string(e) + " of " + std::to_string(n_experts));
      ++p.routed[e];
      if (p.capacity >= 0 && kept[e] >= p.capacity) {
        ++p.dropped;
        continue;
      }
      rank[n * top_k + j] = kept[e]++;
    }
  }
  p.offsets.assign(n_experts + 1, 0);
  for (int64_t e = 0; e < n_experts; ++e) p.offsets[e + 1] = p.offsets[e] + kept[e];

  // Pass 2: place every kept assignment; rows inside an expert follow the priority order.
  p.src_rows.assign(p.offsets.back(), -1);
  for (int64_t n = 0; n < n_tokens; ++n) {
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t r = rank[n * top_k + j];
      if (r < 0) continue;
      const int64_t row = p.offsets[idx[n * top_k + j]] + r;
      p.slot_rows[n * top_k + j] = static_cast<int32_t>(row);
      p.src_rows[row] = static_cast<int32_t>(n);
    }
  }
  return p;
}

}  // namespace sy
