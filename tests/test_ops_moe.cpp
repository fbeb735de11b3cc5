// CPU backend MoE ops: router (scores, top-k, weights, aux term), z-loss, gather/combine through
// the slot table and the grouped SwiGLU experts; gradients against central finite differences
// in float64 (relative error as defined in test_ops_common.h).
#include "test_ops_common.h"

namespace sy {
namespace {

using namespace optest;

struct RouterCase {
  ScoreFn fn;
  bool norm, bias, aux;
};

TEST(OpRouter, ForwardSelectsTopKAndBackwardMatchesFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 6, e = 5, k = 2;
  const Vec rw = randn(n * k, 2), coef = randn(e, 3, 0.5), bias = randn(e, 4, 0.3);
  double worst = 0;
  for (const RouterCase rc : {RouterCase{ScoreFn::Softmax, true, false, true}, RouterCase{ScoreFn::Softmax, false, true, true},
                              RouterCase{ScoreFn::Sigmoid, true, true, true}, RouterCase{ScoreFn::Sigmoid, false, false, false},
                              RouterCase{ScoreFn::Softmax, true, false, false}}) {
    Vec logits = randn(n * e, 1, 1.5);
    auto run = [&](DType dt) -> Outputs {
      Tensor scores = be->empty({n, e}, dt), idx = be->empty({n, k}, DType::I32), w = be->empty({n, k}, dt);
      be->router_forward(tensor(*be, {n, e}, logits, dt), rc.bias ? tensor(*be, {e}, bias, dt) : Tensor(), rc.fn,
                         int(k), rc.norm, scores, idx, w);
      return {host(*be, scores), host(*be, idx), host(*be, w)};
    };
    const Outputs o = run(DType::F64);
    // Forward against the definition.
    for (int64_t i = 0; i < n; ++i) {
      Vec s(e);
      double z = 0;
      for (int64_t x = 0; x < e; ++x) z += std::exp(logits[i * e + x]);
      for (int64_t x = 0; x < e; ++x)
        s[x] = rc.fn == ScoreFn::Softmax ? std::exp(logits[i * e + x]) / z : 1 / (1 + std::exp(-logits[i * e + x]));
      for (int64_t x = 0; x < e; ++x) EXPECT_NEAR(o[0][i * e + x], s[x], 1e-15);
      auto sel = [&](int64_t x) { return s[x] + (rc.bias ? bias[x] : 0.0); };
      const int64_t a = int64_t(o[1][i * k]), b = int64_t(o[1][i * k + 1]);
      EXPECT_NE(a, b);
      EXPECT_GT(sel(a), sel(b));
      for (int64_t x = 0; x < e; ++x)
        if (x != a && x != b) {
          EXPECT_GT(sel(b), sel(x));
        }
      const double den = rc.norm ? s[a] + s[b] : 1.0;
      EXPECT_NEAR(o[2][i * k], s[a] / den, 1e-15);
      EXPECT_NEAR(o[2][i * k + 1], s[b] / den, 1e-15);
    }
    // Objective: sum(rw * w) + sum_{n,e} coef[e] * scores / rowsum(scores).
    auto objective = [&] {
      const Outputs r = run(DType::F64);
      double l = dot(rw, r[2]);
      if (rc.aux)
        for (int64_t i = 0; i < n; ++i) {
          double z = 0;
          for (int64_t x = 0; x < e; ++x) z += r[0][i * e + x];
          for (int64_t x = 0; x < e; ++x) l += coef[x] * r[0][i * e + x] / z;
        }
      return l;
    };
    Tensor tl = tensor(*be, {n, e}, logits), ts = tensor(*be, {n, e}, o[0]);
    Tensor tidx = tensor_i32(*be, {n, k}, std::vector<int32_t>(o[1].begin(), o[1].end()));
    Tensor dl = be->empty({n, e}, DType::F64);
    const Outputs g = accumulated_grads(
        *be, {dl},
        [&] {
          be->router_backward(tensor(*be, {n, k}, rw), rc.aux ? tensor(*be, {e}, coef) : Tensor(), tl, ts, tidx, rc.fn,
                              rc.norm, dl);
        },
        "router");
    const double err = fd_check({&logits}, g, objective);
    worst = std::max(worst, err);
    EXPECT_LE(err, 1e-6);
    const Outputs o32 = run(DType::F32);
    EXPECT_EQ(o32[1], o[1]);
    EXPECT_LT(std::max(max_rel_err(o32[0], o[0], 1.0), max_rel_err(o32[2], o[2], 1.0)), 1e-6);
  }
  report("router backward vs FD (5 configurations)", worst);
}

TEST(OpRouter, TiesGoToTheLowerExpertIndex) {
  auto be = make_cpu_backend();
  for (DType dt : {DType::F32, DType::F64}) {
    const Vec logits = {0, 3, 0, 3,  /**/ 1, 1, 1, 1,  /**/ 2, 0, 2, 0};
    Tensor scores = be->empty({3, 4}, dt), idx = be->empty({3, 3}, DType::I32), w = be->empty({3, 3}, dt);
    be->router_forward(tensor(*be, {3, 4}, logits, dt), Tensor(), ScoreFn::Softmax, 3, true, scores, idx, w);
    EXPECT_EQ(host(*be, idx), (Vec{1, 3, 0, /**/ 0, 1, 2, /**/ 0, 2, 1}));
    // A bias that levels two experts: selection sees scores + bias, ties still to the lower index.
    be->router_forward(tensor(*be, {3, 4}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, dt), tensor(*be, {4}, {0, 1, 1, 0.5}, dt),
                       ScoreFn::Sigmoid, 3, false, scores, idx, w);
    EXPECT_EQ(host(*be, idx), (Vec{1, 2, 3, 1, 2, 3, 1, 2, 3}));
    for (double x : host(*be, w)) EXPECT_EQ(x, 0.5);  // weights ignore the bias
  }
}

// Group-limited routing (DeepSeek-V3): 8 experts in 4 groups of 2, the best 2 groups by the sum
// of their two (score + bias), then top-k among those groups' experts only.
TEST(OpRouter, GroupLimitedSelectionKeepsToTheTopGroups) {
  auto be = make_cpu_backend();
  for (DType dt : {DType::F32, DType::F64}) {
    // Scores = sigmoid(logits). Row 0's best expert (7, logit 3) sits in a group whose other
    // expert is poor (logit -3), so its group loses: plain top-2 takes experts 7 and 0,
    // group-limited top-2 keeps to groups 0 and 2.
    const Vec logits = {2.0, 1.5, 0.5, 0.5, 1.0, 1.0, -3.0, 3.0,
                        /* row 1: ties between groups 1 and 3 go to the lower group */
                        0, 0, 1, 1, 0, 0, 1, 1};
    Tensor scores = be->empty({2, 8}, dt), idx = be->empty({2, 2}, DType::I32), w = be->empty({2, 2}, dt);
    be->router_forward(tensor(*be, {2, 8}, logits, dt), Tensor(), ScoreFn::Sigmoid, 2, true, scores, idx, w, {4, 2});
    // Row 0 group sums of sigmoid: g0 .881+.818, g1 .622+.622, g2 .731+.731, g3 .047+.953 = 1.70,
    // 1.24, 1.46, 1.00: groups 0 and 2; best experts there 0 (.881) and 1 (.818).
    EXPECT_EQ(host(*be, idx), (Vec{0, 1, /**/ 2, 3}));
    be->router_forward(tensor(*be, {2, 8}, logits, dt), Tensor(), ScoreFn::Sigmoid, 2, true, scores, idx, w, {4, 1});
    EXPECT_EQ(host(*be, idx), (Vec{0, 1, /**/ 2, 3}));
    // Without groups the best two experts overall: 7 (.953) and 0 (.881); row 1's ties to 2, 3.
    be->router_forward(tensor(*be, {2, 8}, logits, dt), Tensor(), ScoreFn::Sigmoid, 2, true, scores, idx, w);
    EXPECT_EQ(host(*be, idx), (Vec{7, 0, /**/ 2, 3}));
    // A bias that lifts group 3 for selection only: its sum (with bias) wins; row 1's experts 6 and
    // 7 then tie, and the lower index comes first.
    be->router_forward(tensor(*be, {2, 8}, logits, dt), tensor(*be, {8}, {0, 0, 0, 0, 0, 0, 1, 1}, dt),
                       ScoreFn::Sigmoid, 2, true, scores, idx, w, {4, 1});
    EXPECT_EQ(host(*be, idx), (Vec{7, 6, /**/ 6, 7}));
    // 2 groups of 4 holding k = 3 from one group: fine; 4 groups of 2, top 1, k = 3: refused.
    be->router_forward(tensor(*be, {2, 8}, logits, dt), Tensor(), ScoreFn::Sigmoid, 2, true, scores, idx, w, {2, 1});
    EXPECT_THROW(be->router_forward(tensor(*be, {2, 8}, logits, dt), Tensor(), ScoreFn::Sigmoid, 2, true, scores, idx,
                                    w, {3, 1}),
                 std::exception);
  }
}

TEST(OpZLoss, MatchesNaiveAndFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 5, e = 6;
  Vec logits = randn(n * e, 1, 2.0);
  double naive = 0;
  for (int64_t i = 0; i < n; ++i) {
    double z = 0;
    for (int64_t x = 0; x < e; ++x) z += std::exp(logits[i * e + x]);
    naive += std::log(z) * std::log(z);
  }
  EXPECT_NEAR(be->zloss_forward(tensor(*be, {n, e}, logits)), naive, 1e-13 * naive);
  const double coef = 0.3;
  Tensor tl = tensor(*be, {n, e}, logits), dl = be->empty({n, e}, DType::F64);
  const Outputs g = accumulated_grads(*be, {dl}, [&] { be->zloss_backward(tl, coef, dl); }, "zloss");
  const double err = fd_check({&logits}, g, [&] { return coef * be->zloss_forward(tensor(*be, {n, e}, logits)); });
  report("zloss backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  const double f32 = be->zloss_forward(tensor(*be, {n, e}, logits, DType::F32));
  EXPECT_LT(rel_err(f32, naive), 1e-5);
}

// Five tokens, two slots each; token 2's second slot is dropped. Permuted rows grouped by expert.
struct Slots {
  int64_t n = 5, k = 2, m = 9;
  std::vector<int32_t> slot_rows = {4, 0, 8, 2, 5, -1, 1, 7, 6, 3};
  std::vector<int32_t> src_rows() const {
    std::vector<int32_t> s(m);
    for (int64_t i = 0; i < n * k; ++i)
      if (slot_rows[i] >= 0) s[slot_rows[i]] = int32_t(i / k);
    return s;
  }
};

TEST(OpDispatch, GatherCombineRoundTripAndGradients) {
  auto be = make_cpu_backend();
  const Slots sl;
  const int64_t d = 4;
  Vec x = randn(sl.n * d, 1);
  Tensor slots = tensor_i32(*be, {sl.n, sl.k}, sl.slot_rows), src = tensor_i32(*be, {sl.m}, sl.src_rows());
  auto gather = [&](DType dt) -> Outputs {
    Tensor out = be->empty({sl.m, d}, dt);
    be->gather_rows(tensor(*be, {sl.n, d}, x, dt), src, out);
    return {host(*be, out)};
  };
  const Vec xp = gather(DType::F64)[0];
  for (int64_t r = 0; r < sl.m; ++r)
    for (int64_t c = 0; c < d; ++c) EXPECT_EQ(xp[r * d + c], x[sl.src_rows()[r] * d + c]);
  // Round trips: each token comes back once per kept slot, exactly.
  Tensor back = be->zeros({sl.n, d}, DType::F64), comb = be->zeros({sl.n, d}, DType::F64);
  be->gather_rows_backward(tensor(*be, {sl.m, d}, xp), slots, back);
  be->combine_forward(tensor(*be, {sl.m, d}, xp), slots, tensor(*be, {sl.n, sl.k}, Vec(sl.n * sl.k, 1.0)), comb);
  const Vec b1 = host(*be, back), b2 = host(*be, comb);
  for (int64_t i = 0; i < sl.n; ++i)
    for (int64_t c = 0; c < d; ++c) {
      const double kept = i == 2 ? 1 : 2;
      EXPECT_EQ(b1[i * d + c], kept * x[i * d + c]);
      EXPECT_EQ(b2[i * d + c], kept * x[i * d + c]);
    }
  // Gather's backward.
  const Vec r = randn(sl.m * d, 2);
  Tensor dx = be->empty({sl.n, d}, DType::F64);
  Outputs g = accumulated_grads(
      *be, {dx}, [&] { be->gather_rows_backward(tensor(*be, {sl.m, d}, r), slots, dx); }, "gather_rows_backward");
  double err = fd_check({&x}, g, [&] { return dot(r, gather(DType::F64)[0]); });
  report("gather_rows backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  // Combine's backward, for y and w.
  Vec y = randn(sl.m * d, 3), w = randn(sl.n * sl.k, 4);
  const Vec rc = randn(sl.n * d, 5), base = randn(sl.n * d, 6);
  auto combine = [&](DType dt) -> Outputs {
    Tensor out = tensor(*be, {sl.n, d}, base, dt);  // accumulates onto what is there
    be->combine_forward(tensor(*be, {sl.m, d}, y, dt), slots, tensor(*be, {sl.n, sl.k}, w, dt), out);
    return {host(*be, out)};
  };
  Tensor dy = be->empty({sl.m, d}, DType::F64), dw = be->empty({sl.n, sl.k}, DType::F64);
  g = accumulated_grads(
      *be, {dy, dw},
      [&] {
        be->combine_backward(tensor(*be, {sl.n, d}, rc), tensor(*be, {sl.m, d}, y), slots,
                             tensor(*be, {sl.n, sl.k}, w), dy, dw);
      },
      "combine_backward");
  err = fd_check({&y, &w}, g, [&] { return dot(rc, combine(DType::F64)[0]); });
  report("combine backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  EXPECT_LT(f32_vs_f64(combine), 1e-6);
  // A slot table that claims one permuted row twice is refused rather than raced on.
  std::vector<int32_t> dup = sl.slot_rows;
  dup[1] = 4;
  EXPECT_THROW(be->combine_backward(tensor(*be, {sl.n, d}, rc), tensor(*be, {sl.m, d}, y),
                                    tensor_i32(*be, {sl.n, sl.k}, dup), tensor(*be, {sl.n, sl.k}, w), dy, dw),
               std::invalid_argument);
  EXPECT_THROW(be->gather_rows(tensor(*be, {sl.n, d}, x), tensor_i32(*be, {1}, {5}), be->empty({1, d}, DType::F64)),
               std::out_of_range);
}

// The grouped experts against the same computation one expert at a time through the dense ops,
// and their backward against finite differences; with biases (GPT-OSS) the bias gradients too.
void check_grouped_swiglu(const Backend::GluOpts& glu, bool biases, const std::string& tag) {
  auto be = make_cpu_backend();
  const int64_t e = 3, d = 6, f = 5, m = 9;
  const std::vector<int64_t> offsets = {0, 4, 4, 9};  // expert 1 gets no rows
  Vec x = randn(m * d, 1);
  std::vector<Vec> w13(e), w2(e), b13(e), b2(e);
  for (int64_t i = 0; i < e; ++i) {
    w13[i] = randn(2 * f * d, 10 + i, 0.5);
    w2[i] = randn(d * f, 20 + i, 0.5);
    b13[i] = randn(2 * f, 30 + i, 0.5);
    b2[i] = randn(d, 40 + i, 0.5);
  }
  const Vec r = randn(m * d, 3);
  struct Weights {
    std::vector<Tensor> w13, w2, b13, b2;
  };
  auto weights = [&](DType dt) {
    Weights t;
    for (int64_t i = 0; i < e; ++i) {
      t.w13.push_back(tensor(*be, {2 * f, d}, w13[i], dt));
      t.w2.push_back(tensor(*be, {f, d}, w2[i], dt));
      if (biases) t.b13.push_back(tensor(*be, {2 * f}, b13[i], dt)), t.b2.push_back(tensor(*be, {d}, b2[i], dt));
    }
    return t;
  };
  auto run = [&](DType dt) -> Outputs {
    const Weights t = weights(dt);
    Tensor h13 = be->empty({m, 2 * f}, dt), a = be->empty({m, f}, dt), y = be->empty({m, d}, dt);
    be->fill(y, std::nan(""));  // every row must be written
    be->grouped_swiglu_forward(tensor(*be, {m, d}, x, dt), offsets, t.w13, t.w2, h13, a, y, {glu, t.b13, t.b2});
    return {host(*be, y), host(*be, h13), host(*be, a)};
  };
  const Outputs o = run(DType::F64);
  {
    const Weights t = weights(DType::F64);
    Tensor tx = tensor(*be, {m, d}, x), h13 = be->empty({m, 2 * f}, DType::F64), a = be->empty({m, f}, DType::F64),
           y = be->empty({m, d}, DType::F64);
    for (int64_t i = 0; i < e; ++i) {
      const int64_t lo = offsets[i], hi = offsets[i + 1];
      if (lo == hi) continue;
      be->gemm(tx.rows(lo, hi), false, t.w13[i], true, h13.rows(lo, hi), 1, 0);
      Vec hb = host(*be, h13.rows(lo, hi));
      if (biases)
        for (int64_t j = 0; j < hi - lo; ++j)
          for (int64_t c = 0; c < 2 * f; ++c) hb[j * 2 * f + c] += b13[i][c];
      be->upload(hb.data(), h13.rows(lo, hi));
      be->swiglu_forward(h13.rows(lo, hi), a.rows(lo, hi), glu);
      be->gemm(a.rows(lo, hi), false, t.w2[i], false, y.rows(lo, hi), 1, 0);
      Vec yb = host(*be, y.rows(lo, hi));
      if (biases)
        for (int64_t j = 0; j < hi - lo; ++j)
          for (int64_t c = 0; c < d; ++c) yb[j * d + c] += b2[i][c];
      be->upload(yb.data(), y.rows(lo, hi));
    }
    EXPECT_LT(max_rel_err(o[0], host(*be, y)), 1e-14) << tag;
    EXPECT_LT(max_rel_err(o[1], host(*be, h13)), 1e-14) << tag;
    EXPECT_LT(max_rel_err(o[2], host(*be, a)), 1e-14) << tag;
  }
  const Weights t = weights(DType::F64);
  std::vector<Tensor> d13, d2, db13, db2;
  for (int64_t i = 0; i < e; ++i) {
    d13.push_back(be->empty({2 * f, d}, DType::F64));
    d2.push_back(be->empty({f, d}, DType::F64));
    if (biases) db13.push_back(be->empty({2 * f}, DType::F64)), db2.push_back(be->empty({d}, DType::F64));
  }
  Tensor tx = tensor(*be, {m, d}, x), th = tensor(*be, {m, 2 * f}, o[1]), ta = tensor(*be, {m, f}, o[2]),
         dx = be->empty({m, d}, DType::F64);
  std::vector<Tensor> grads = {dx};
  for (auto* v : {&d13, &d2, &db13, &db2})
    for (const Tensor& g : *v) grads.push_back(g);
  const Outputs g = accumulated_grads(
      *be, grads,
      [&] {
        be->grouped_swiglu_backward(tensor(*be, {m, d}, r), tx, offsets, t.w13, t.w2, th, ta, dx, d13, d2,
                                    {glu, t.b13, t.b2}, db13, db2);
      },
      "grouped_swiglu");
  std::vector<Vec*> inputs = {&x};
  for (auto* v : {&w13, &w2})
    for (auto& w : *v) inputs.push_back(&w);
  if (biases)
    for (auto* v : {&b13, &b2})
      for (auto& w : *v) inputs.push_back(&w);
  const double err = fd_check(inputs, g, [&] { return dot(r, run(DType::F64)[0]); });
  report("grouped_swiglu backward vs FD " + tag, err);
  EXPECT_LE(err, 1e-6) << tag;
  for (double v : g[1 + 1]) EXPECT_EQ(v, 0.0);  // the empty expert gets no gradient
  if (biases)
    for (double v : g[1 + 2 * e + 1]) EXPECT_EQ(v, 0.0);  // nor its bias
  const double e32 = f32_vs_f64(run);
  report("grouped_swiglu forward f32 vs f64 " + tag, e32);
  EXPECT_LT(e32, 1e-5) << tag;
  EXPECT_THROW(be->grouped_swiglu_forward(tx, std::vector<int64_t>{0, 4, 4, 8}, t.w13, t.w2, th, ta, dx),
               std::invalid_argument);
}

TEST(OpGroupedSwiglu, MatchesSequentialExpertsAndFiniteDifferences) {
  check_grouped_swiglu({}, false, "plain");
}

// GPT-OSS's experts: biases on gate|up and down, the clamped SwiGLU (a limit the inputs cross).
TEST(OpGroupedSwiglu, BiasesAndClampedFormMatchSequentialAndFiniteDifferences) {
  check_grouped_swiglu({}, true, "biases");
  check_grouped_swiglu({1.702, 0.6}, true, "clamped+biases");
}

}  // namespace
}  // namespace sy
