// The local token permutation: capacity rule, dropless routing, and exact round trips.
#include <gtest/gtest.h>

#include <numeric>

#include "engine/host_io.h"
#include "engine/layers/dispatch_plan.h"
#include "engine/rng.h"

namespace sy {
namespace {

TEST(DispatchPlan, CapacityFollowsTheDocumentedPriority) {
  // 4 tokens, top-2, 2 experts, factor 0.5 -> capacity ceil(0.5 * 4 * 2 / 2) = 2.
  // First choices: t0->0, t1->0, t2->0, t3->1; second choices: t0->1, t1->1, t2->1, t3->0.
  const int32_t idx[] = {0, 1, 0, 1, 0, 1, 1, 0};
  DispatchPlan p = make_dispatch_plan(idx, 4, 2, 2, 0.5);
  EXPECT_EQ(p.capacity, 2);
  // Expert 0 keeps first choices of t0, t1 (t2's first choice and t3's second are dropped);
  // expert 1 keeps t3's first choice, then t0's second choice.
  EXPECT_EQ(p.slot_rows, (std::vector<int32_t>{0, 3, 1, -1, -1, -1, 2, -1}));
  EXPECT_EQ(p.src_rows, (std::vector<int32_t>{0, 1, 3, 0}));
  EXPECT_EQ(p.offsets, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(p.routed, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(p.dropped, 4);
}

TEST(DispatchPlan, CapacityRoundsUpAndExactProductsDoNot) {
  EXPECT_EQ(expert_capacity(1.0, 4096, 2, 8), 1024);
  EXPECT_EQ(expert_capacity(1.25, 10, 2, 8), 4);  // 3.125 -> 4
  EXPECT_EQ(expert_capacity(0.0, 10, 2, 8), -1);
}

TEST(DispatchPlan, DroplessRoutesEveryAssignmentIncludingToAnEmptyExpert) {
  const int64_t n = 50, k = 3, e = 6;
  Philox rng(1, 2);
  std::vector<int32_t> idx(n * k);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) idx[t * k + j] = int32_t(1 + (t + j * 2) % (e - 1));  // expert 0 never chosen
  DispatchPlan p = make_dispatch_plan(idx.data(), n, k, e, 0.0);
  EXPECT_EQ(p.dropped, 0);
  EXPECT_EQ(p.rows(), n * k);
  EXPECT_EQ(p.offsets[1] - p.offsets[0], 0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t row = p.slot_rows[t * k + j];
      ASSERT_GE(row, 0);
      EXPECT_EQ(p.src_rows[row], t);
      EXPECT_GE(row, p.offsets[idx[t * k + j]]);
      EXPECT_LT(row, p.offsets[idx[t * k + j] + 1]);
    }
}

TEST(DispatchPlan, GatherThenCombineWithUnitWeightsReturnsTheInputExactly) {
  auto be = make_cpu_backend();
  const int64_t n = 37, k = 2, e = 5, d = 7;
  Philox rng(4, 5);
  std::vector<int32_t> idx(n * k);
  for (int64_t t = 0; t < n; ++t) {
    idx[t * k] = int32_t(rng.below(e));
    idx[t * k + 1] = int32_t((idx[t * k] + 1 + rng.below(e - 1)) % e);
  }
  DispatchPlan p = make_dispatch_plan(idx.data(), n, k, e, 0.0);
  std::vector<double> x(n * d);
  for (auto& v : x) v = rng.normal();
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor xt = be->empty({n, d}, dt), src = be->empty({p.rows()}, DType::I32), slots = be->empty({n, k}, DType::I32);
    upload_f64(*be, x, xt);
    be->upload(p.src_rows.data(), src);
    be->upload(p.slot_rows.data(), slots);
    Tensor xp = be->empty({p.rows(), d}, dt);
    be->gather_rows(xt, src, xp);
    // Combine with weights 1/k per slot: each token's k identical copies sum back to itself.
    Tensor w = be->empty({n, k}, dt);
    be->fill(w, 0.5);
    Tensor back = be->zeros({n, d}, dt);
    be->combine_forward(xp, slots, w, back);
    const std::vector<double> got = download_f64(*be, back), want = download_f64(*be, xt);
    EXPECT_EQ(got, want) << dtype_name(dt);
    // Gradients: the adjoint of gather sums the k copies: exactly 2x.
    Tensor dx = be->zeros({n, d}, dt);
    be->gather_rows_backward(xp, slots, dx);
    const std::vector<double> g = download_f64(*be, dx);
    for (size_t i = 0; i < g.size(); ++i) ASSERT_EQ(g[i], 2 * want[i]);
  }
}

}  // namespace
}  // namespace sy
