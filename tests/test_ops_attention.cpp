// CPU backend: causal grouped-query attention against a naive O(T^2) reference with explicit
// probabilities, and its backward against central finite differences in float64.
#include "test_ops_common.h"

namespace sy {
namespace {

using namespace optest;

struct Dims {
  int64_t b, t, h, kv, hd;
};

// out [B, T, H, hd] and lse [B, H, T] straight from the definition.
Outputs naive_attention(const Dims& d, const Vec& q, const Vec& k, const Vec& v) {
  Vec out(d.b * d.t * d.h * d.hd), lse(d.b * d.h * d.t);
  const int64_t group = d.h / d.kv;
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t h = 0; h < d.h; ++h)
      for (int64_t t = 0; t < d.t; ++t) {
        const int64_t g = h / group;
        std::vector<long double> s(t + 1);
        long double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          long double acc = 0;
          for (int64_t c = 0; c < d.hd; ++c)
            acc += (long double)q[((b * d.t + t) * d.h + h) * d.hd + c] * k[((b * d.t + j) * d.kv + g) * d.hd + c];
          s[j] = acc / std::sqrt((long double)d.hd);
          mx = std::max(mx, s[j]);
        }
        long double z = 0;
        for (auto& x : s) z += std::exp(x - mx);
        lse[(b * d.h + h) * d.t + t] = double(mx + std::log(z));
        for (int64_t c = 0; c < d.hd; ++c) {
          long double acc = 0;
          for (int64_t j = 0; j <= t; ++j) acc += std::exp(s[j] - mx) / z * v[((b * d.t + j) * d.kv + g) * d.hd + c];
          out[((b * d.t + t) * d.h + h) * d.hd + c] = double(acc);
        }
      }
  return {out, lse};
}

Outputs run_attention(Backend& be, const Dims& d, const Vec& q, const Vec& k, const Vec& v, DType dt) {
  Tensor out = be.empty({d.b, d.t, d.h, d.hd}, dt), lse = be.empty({d.b, d.h, d.t}, dt);
  be.attention_forward(tensor(be, {d.b, d.t, d.h, d.hd}, q, dt), tensor(be, {d.b, d.t, d.kv, d.hd}, k, dt),
                       tensor(be, {d.b, d.t, d.kv, d.hd}, v, dt), out, lse);
  return {host(be, out), host(be, lse)};
}

TEST(OpAttention, ForwardMatchesNaiveReference) {
  auto be = make_cpu_backend();
  // T spans several query blocks with a ragged last one; GQA with 3 query heads per kv head.
  for (const Dims d : {Dims{2, 7, 4, 2, 4}, Dims{2, 75, 6, 2, 8}, Dims{1, 64, 2, 2, 32}}) {
    const Vec q = randn(d.b * d.t * d.h * d.hd, 1), k = randn(d.b * d.t * d.kv * d.hd, 2),
              v = randn(d.b * d.t * d.kv * d.hd, 3);
    const Outputs want = naive_attention(d, q, k, v);
    const Outputs got = run_attention(*be, d, q, k, v, DType::F64);
    const double err = std::max(max_rel_err(got[0], want[0]), max_rel_err(got[1], want[1]));
    report("attention f64 vs naive T=" + std::to_string(d.t), err);
    EXPECT_LT(err, 1e-12);
    const double e32 = f32_vs_f64([&](DType dt) { return run_attention(*be, d, q, k, v, dt); });
    report("attention forward f32 vs f64 T=" + std::to_string(d.t), e32);
    EXPECT_LT(e32, 1e-5);
  }
}

TEST(OpAttention, BackwardMatchesFiniteDifferences) {
  auto be = make_cpu_backend();
  for (const Dims d : {Dims{2, 5, 4, 2, 4}, Dims{1, 37, 4, 2, 3}}) {
    Vec q = randn(d.b * d.t * d.h * d.hd, 4), k = randn(d.b * d.t * d.kv * d.hd, 5),
        v = randn(d.b * d.t * d.kv * d.hd, 6);
    const Vec r = randn(d.b * d.t * d.h * d.hd, 7);
    const Outputs fwd = run_attention(*be, d, q, k, v, DType::F64);
    const Shape qs = {d.b, d.t, d.h, d.hd}, ks = {d.b, d.t, d.kv, d.hd};
    Tensor tq = tensor(*be, qs, q), tk = tensor(*be, ks, k), tv = tensor(*be, ks, v), to = tensor(*be, qs, fwd[0]),
           tl = tensor(*be, {d.b, d.h, d.t}, fwd[1]), tr = tensor(*be, qs, r);
    Tensor dq = be->empty(qs, DType::F64), dk = be->empty(ks, DType::F64), dv = be->empty(ks, DType::F64);
    const Outputs g = accumulated_grads(
        *be, {dq, dk, dv}, [&] { be->attention_backward(tr, tq, tk, tv, to, tl, dq, dk, dv); }, "attention");
    const double err =
        fd_check({&q, &k, &v}, g, [&] { return dot(r, run_attention(*be, d, q, k, v, DType::F64)[0]); });
    report("attention backward vs FD T=" + std::to_string(d.t), err);
    EXPECT_LE(err, 1e-6);
  }
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
