// CPU backend: causal grouped-query attention against a naive O(T^2) reference with explicit
// probabilities, and its backward against central finite differences in float64.
#include "test_ops_common.h"

namespace sy {
namespace {

using namespace optest;

struct Dims {
  int64_t b, t, h, kv, hd;
  int64_t hv = 0;      // 0: hd
  int64_t window = 0;  // sliding window (0: none)
  bool sinks = false;  // a learned logit per query head in each softmax denominator
  double scale = 0;    // 0: 1/sqrt(hd)
  int64_t v_dim() const { return hv ? hv : hd; }
  std::string tag() const {
    return "T=" + std::to_string(t) + " hd=" + std::to_string(hd) + " hv=" + std::to_string(v_dim()) +
           " W=" + std::to_string(window) + (sinks ? " sinks" : "") + (scale ? " scaled" : "");
  }
};

// out [B, T, H, hv] and lse [B, H, T] straight from the definition (engine/backend.h).
Outputs naive_attention(const Dims& d, const Vec& q, const Vec& k, const Vec& v, const Vec& sinks) {
  const int64_t hv = d.v_dim();
  Vec out(d.b * d.t * d.h * hv), lse(d.b * d.h * d.t);
  const int64_t group = d.h / d.kv;
  const long double scale = d.scale ? d.scale : 1 / std::sqrt((long double)d.hd);
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t h = 0; h < d.h; ++h)
      for (int64_t t = 0; t < d.t; ++t) {
        const int64_t g = h / group, j0 = d.window ? std::max<int64_t>(0, t - d.window + 1) : 0;
        std::vector<long double> s(t + 1, -INFINITY);
        long double mx = d.sinks ? (long double)sinks[h] : -1e300L;
        for (int64_t j = j0; j <= t; ++j) {
          long double acc = 0;
          for (int64_t c = 0; c < d.hd; ++c)
            acc += (long double)q[((b * d.t + t) * d.h + h) * d.hd + c] * k[((b * d.t + j) * d.kv + g) * d.hd + c];
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        long double z = d.sinks ? std::exp((long double)sinks[h] - mx) : 0;
        for (int64_t j = j0; j <= t; ++j) z += std::exp(s[j] - mx);
        lse[(b * d.h + h) * d.t + t] = double(mx + std::log(z));
        for (int64_t c = 0; c < hv; ++c) {
          long double acc = 0;
          for (int64_t j = j0; j <= t; ++j) acc += std::exp(s[j] - mx) / z * v[((b * d.t + j) * d.kv + g) * hv + c];
          out[((b * d.t + t) * d.h + h) * hv + c] = double(acc);
        }
      }
  return {out, lse};
}

Backend::AttentionOpts opts_for(Backend& be, const Dims& d, const Vec& sinks, DType dt) {
  Backend::AttentionOpts o;
  o.window = d.window;
  o.scale = d.scale;
  if (d.sinks) o.sinks = tensor(be, {d.h}, sinks, dt);
  return o;
}

Outputs run_attention(Backend& be, const Dims& d, const Vec& q, const Vec& k, const Vec& v, const Vec& sinks,
                      DType dt) {
  const int64_t hv = d.v_dim();
  Tensor out = be.empty({d.b, d.t, d.h, hv}, dt), lse = be.empty({d.b, d.h, d.t}, dt);
  be.attention_forward(tensor(be, {d.b, d.t, d.h, d.hd}, q, dt), tensor(be, {d.b, d.t, d.kv, d.hd}, k, dt),
                       tensor(be, {d.b, d.t, d.kv, hv}, v, dt), out, lse, opts_for(be, d, sinks, dt));
  return {host(be, out), host(be, lse)};
}

// Plain causal GQA, then each option alone and together: hv != hd (MLA), sliding windows of one
// key, of less than a query block and of more than T, sinks, an explicit scale.
const std::vector<Dims> kForwardCases = {
    {2, 7, 4, 2, 4},          {2, 75, 6, 2, 8},
    {1, 64, 2, 2, 32},        {2, 40, 4, 2, 12, 8},
    {1, 70, 2, 1, 8, 0, 1},   {1, 70, 4, 2, 8, 0, 13},
    {1, 70, 4, 2, 8, 0, 100}, {2, 45, 4, 2, 8, 0, 0, true},
    {1, 70, 6, 2, 8, 4, 20, true, 0.3}};

TEST(OpAttention, ForwardMatchesNaiveReference) {
  auto be = make_cpu_backend();
  // T spans several query blocks with a ragged last one; GQA with 3 query heads per kv head.
  for (const Dims& d : kForwardCases) {
    const Vec q = randn(d.b * d.t * d.h * d.hd, 1), k = randn(d.b * d.t * d.kv * d.hd, 2),
              v = randn(d.b * d.t * d.kv * d.v_dim(), 3), sinks = randn(d.h, 8);
    const Outputs want = naive_attention(d, q, k, v, sinks);
    const Outputs got = run_attention(*be, d, q, k, v, sinks, DType::F64);
    const double err = std::max(max_rel_err(got[0], want[0]), max_rel_err(got[1], want[1]));
    report("attention f64 vs naive " + d.tag(), err);
    EXPECT_LT(err, 1e-12) << d.tag();
    const double e32 = f32_vs_f64([&](DType dt) { return run_attention(*be, d, q, k, v, sinks, dt); });
    report("attention forward f32 vs f64 " + d.tag(), e32);
    EXPECT_LT(e32, 1e-5) << d.tag();
  }
}

TEST(OpAttention, WindowAndSinksChangeTheResult) {
  // The options must reach the kernel: each changes the output against plain attention.
  auto be = make_cpu_backend();
  const Dims plain{1, 40, 4, 2, 8};
  const Vec q = randn(40 * 4 * 8, 1), k = randn(40 * 2 * 8, 2), v = randn(40 * 2 * 8, 3), sinks = randn(4, 4);
  const Vec base = run_attention(*be, plain, q, k, v, sinks, DType::F64)[0];
  for (Dims d : {Dims{1, 40, 4, 2, 8, 0, 10}, Dims{1, 40, 4, 2, 8, 0, 0, true}, Dims{1, 40, 4, 2, 8, 0, 0, false, 0.1}})
    EXPECT_GT(max_rel_err(run_attention(*be, d, q, k, v, sinks, DType::F64)[0], base), 1e-3) << d.tag();
}

TEST(OpAttention, BackwardMatchesFiniteDifferences) {
  auto be = make_cpu_backend();
  for (const Dims& d : {Dims{2, 5, 4, 2, 4}, Dims{1, 37, 4, 2, 3}, Dims{1, 37, 4, 2, 6, 4}, Dims{1, 40, 4, 2, 4, 0, 7},
                        Dims{2, 9, 4, 2, 4, 0, 0, true}, Dims{1, 37, 4, 1, 5, 3, 11, true, 0.7}}) {
    const int64_t hv = d.v_dim();
    Vec q = randn(d.b * d.t * d.h * d.hd, 4), k = randn(d.b * d.t * d.kv * d.hd, 5),
        v = randn(d.b * d.t * d.kv * hv, 6), sinks = randn(d.h, 9);
    const Vec r = randn(d.b * d.t * d.h * hv, 7);
    const Outputs fwd = run_attention(*be, d, q, k, v, sinks, DType::F64);
    const Shape qs = {d.b, d.t, d.h, d.hd}, ks = {d.b, d.t, d.kv, d.hd}, vs = {d.b, d.t, d.kv, hv},
                os = {d.b, d.t, d.h, hv};
    Tensor tq = tensor(*be, qs, q), tk = tensor(*be, ks, k), tv = tensor(*be, vs, v), to = tensor(*be, os, fwd[0]),
           tl = tensor(*be, {d.b, d.h, d.t}, fwd[1]), tr = tensor(*be, os, r);
    Tensor dq = be->empty(qs, DType::F64), dk = be->empty(ks, DType::F64), dv = be->empty(vs, DType::F64);
    Tensor ds = d.sinks ? be->empty({d.h}, DType::F64) : Tensor{};
    const Backend::AttentionOpts o = opts_for(*be, d, sinks, DType::F64);
    std::vector<Tensor> grads = {dq, dk, dv};
    std::vector<Vec*> inputs = {&q, &k, &v};
    if (d.sinks) grads.push_back(ds), inputs.push_back(&sinks);
    const Outputs g = accumulated_grads(
        *be, grads, [&] { be->attention_backward(tr, tq, tk, tv, to, tl, dq, dk, dv, o, ds); }, "attention");
    const double err =
        fd_check(inputs, g, [&] { return dot(r, run_attention(*be, d, q, k, v, sinks, DType::F64)[0]); });
    report("attention backward vs FD " + d.tag(), err);
    EXPECT_LE(err, 1e-6) << d.tag();
  }
}

TEST(OpCopyColumns, CopiesAndAccumulatesABlock) {
  auto be = make_cpu_backend();
  for (const DType dt : {DType::F32, DType::F64}) {
    const Vec s = randn(5 * 7, 1), d0 = randn(5 * 9, 2);
    Tensor src = tensor(*be, {5, 7}, s, dt), dst = tensor(*be, {5, 9}, d0, dt);
    be->copy_columns(src, 2, dst, 4, 3, false);
    Vec want = d0;
    for (int r = 0; r < 5; ++r)
      for (int c = 0; c < 3; ++c) want[r * 9 + 4 + c] = s[r * 7 + 2 + c];
    EXPECT_LT(max_rel_err(host(*be, dst), want), dt == DType::F32 ? 1e-7 : 1e-15);
    be->copy_columns(src, 0, dst, 0, 7, true);
    for (int r = 0; r < 5; ++r)
      for (int c = 0; c < 7; ++c) want[r * 9 + c] += s[r * 7 + c];
    EXPECT_LT(max_rel_err(host(*be, dst), want), dt == DType::F32 ? 1e-6 : 1e-15);
  }
  Tensor a = be->empty({2, 4}, DType::F32), b = be->empty({2, 6}, DType::F32);
  EXPECT_THROW(be->copy_columns(a, 2, b, 0, 3, false), std::invalid_argument);  // past src's columns
  EXPECT_THROW(be->copy_columns(a, 0, b, 4, 3, false), std::invalid_argument);  // past dst's columns
  EXPECT_THROW(be->copy_columns(a, 0, be->empty({3, 6}, DType::F32), 0, 1, false), std::invalid_argument);
}

TEST(OpAttention, RejectsBadShapes) {
  auto be = make_cpu_backend();
  const DType f = DType::F32;
  Tensor q = be->empty({1, 4, 4, 8}, f), k = be->empty({1, 4, 3, 8}, f), out = be->empty({1, 4, 4, 8}, f),
         lse = be->empty({1, 4, 4}, f);
  EXPECT_THROW(be->attention_forward(q, k, k, out, lse), std::invalid_argument);  // 4 % 3 != 0
  Tensor k2 = be->empty({1, 4, 2, 8}, f);
  EXPECT_NO_THROW(be->attention_forward(q, k2, k2, out, lse));
  EXPECT_THROW(be->attention_forward(q, k2, k2, out, be->empty({1, 4, 5}, f)), std::invalid_argument);
  EXPECT_THROW(be->attention_forward(q, k2, be->empty({1, 4, 2, 8}, DType::F64), out, lse), std::invalid_argument);
}

}  // namespace
}  // namespace sy
