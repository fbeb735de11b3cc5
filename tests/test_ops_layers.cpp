// CPU backend: embedding, RMSNorm, RoPE, SwiGLU, cross-entropy and AdamW, each in float64 against
// central finite differences (h = 1e-6; see test_ops_common.h for the relative error measure).
#include "test_ops_common.h"

namespace sy {
namespace {

using namespace optest;

TEST(OpEmbedding, ForwardGathersAndBackwardMatchesFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t v = 7, d = 5, n = 9;
  Vec table = randn(v * d, 1);
  const std::vector<int32_t> ids = {3, 0, 6, 3, 3, 1, 6, 2, 0};  // repeats accumulate
  const Vec r = randn(n * d, 2);
  Tensor tid = tensor_i32(*be, {n}, ids);
  auto forward = [&](DType dt) -> Outputs {
    Tensor out = be->empty({n, d}, dt);
    be->embedding_forward(tensor(*be, {v, d}, table, dt), tid, out);
    return {host(*be, out)};
  };
  const Vec out = forward(DType::F64)[0];
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) EXPECT_EQ(out[i * d + j], table[ids[i] * d + j]);
  Tensor dtable = be->empty({v, d}, DType::F64);
  const Outputs g = accumulated_grads(
      *be, {dtable}, [&] { be->embedding_backward(tensor(*be, {n, d}, r), tid, dtable); }, "embedding");
  const double err = fd_check({&table}, g, [&] { return dot(r, forward(DType::F64)[0]); });
  report("embedding backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  EXPECT_LT(f32_vs_f64(forward), 1e-7);  // a copy: only the table's rounding to float differs
  EXPECT_THROW(be->embedding_forward(tensor(*be, {v, d}, table), tensor_i32(*be, {1}, {7}), be->empty({1, d}, DType::F64)),
               std::out_of_range);
  EXPECT_THROW(be->embedding_forward(tensor(*be, {v, d}, table), tid, be->empty({n, d + 1}, DType::F64)),
               std::invalid_argument);
}

TEST(OpRmsNorm, GradientsMatchFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 5, d = 12;
  const double eps = 1e-5;
  Vec x = randn(n * d, 1), w = randn(d, 2);
  const Vec r = randn(n * d, 3);
  auto forward = [&](DType dt) -> Outputs {
    Tensor y = be->empty({n, d}, dt), rstd = be->empty({n}, dt);
    be->rmsnorm_forward(tensor(*be, {n, d}, x, dt), tensor(*be, {d}, w, dt), eps, y, rstd);
    return {host(*be, y), host(*be, rstd)};
  };
  // Against the definition.
  const Outputs o = forward(DType::F64);
  double ref_err = 0;
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[i * d + j] * x[i * d + j];
    const double rs = 1 / std::sqrt(ss / d + eps);
    ref_err = std::max(ref_err, rel_err(o[1][i], rs));
    for (int64_t j = 0; j < d; ++j) ref_err = std::max(ref_err, rel_err(o[0][i * d + j], x[i * d + j] * rs * w[j]));
  }
  EXPECT_LT(ref_err, 1e-14);
  Tensor tx = tensor(*be, {n, d}, x), tw = tensor(*be, {d}, w), rstd = tensor(*be, {n}, o[1]);
  Tensor dx = be->empty({n, d}, DType::F64), dw = be->empty({d}, DType::F64);
  const Outputs g = accumulated_grads(
      *be, {dx, dw}, [&] { be->rmsnorm_backward(tensor(*be, {n, d}, r), tx, tw, rstd, dx, dw); }, "rmsnorm");
  const double err = fd_check({&x, &w}, g, [&] { return dot(r, forward(DType::F64)[0]); });
  report("rmsnorm backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  const double e32 = f32_vs_f64(forward);
  report("rmsnorm forward f32 vs f64", e32);
  EXPECT_LT(e32, 1e-5);
}

TEST(OpRope, ForwardMatchesDefinitionInPlaceAndBackwardMatchesFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 5, h = 3, hd = 6, half = hd / 2, p = 10;
  Vec x = randn(n * h * hd, 1);
  const Vec r = randn(n * h * hd, 2);
  const std::vector<int32_t> pos = {0, 4, 9, 4, 1};
  Vec cs(p * half), sn(p * half);
  for (int64_t t = 0; t < p; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double ang = t * std::pow(10000.0, -2.0 * i / hd);
      cs[t * half + i] = std::cos(ang);
      sn[t * half + i] = std::sin(ang);
    }
  Tensor tpos = tensor_i32(*be, {n}, pos);
  auto forward = [&](DType dt) -> Outputs {
    Tensor y = be->empty({n, h, hd}, dt);
    be->rope_forward(tensor(*be, {n, h, hd}, x, dt), tpos, tensor(*be, {p, half}, cs, dt),
                     tensor(*be, {p, half}, sn, dt), y);
    return {host(*be, y)};
  };
  const Vec y = forward(DType::F64)[0];
  double ref_err = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t o = (t * h + hh) * hd;
        const double ang = pos[t] * std::pow(10000.0, -2.0 * i / hd), a = x[o + i], b = x[o + i + half];
        ref_err = std::max(ref_err, std::abs(y[o + i] - (a * std::cos(ang) - b * std::sin(ang))));
        ref_err = std::max(ref_err, std::abs(y[o + i + half] - (b * std::cos(ang) + a * std::sin(ang))));
      }
  EXPECT_LT(ref_err, 1e-14);
  Tensor inplace = tensor(*be, {n, h, hd}, x);
  be->rope_forward(inplace, tpos, tensor(*be, {p, half}, cs), tensor(*be, {p, half}, sn), inplace);
  EXPECT_EQ(host(*be, inplace), y);

  Tensor dx = be->empty({n, h, hd}, DType::F64);
  const Outputs g = accumulated_grads(
      *be, {dx},
      [&] {
        be->rope_backward(tensor(*be, {n, h, hd}, r), tpos, tensor(*be, {p, half}, cs), tensor(*be, {p, half}, sn), dx);
      },
      "rope");
  const double err = fd_check({&x}, g, [&] { return dot(r, forward(DType::F64)[0]); });
  report("rope backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  EXPECT_LT(f32_vs_f64(forward), 1e-6);
  EXPECT_THROW(be->rope_forward(inplace, tensor_i32(*be, {n}, {0, 1, 2, 3, 10}), tensor(*be, {p, half}, cs),
                                tensor(*be, {p, half}, sn), inplace),
               std::out_of_range);
}

TEST(OpSwiglu, GradientsMatchFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 4, f = 5;
  Vec h = randn(n * 2 * f, 1, 2.0);
  const Vec r = randn(n * f, 2);
  auto forward = [&](DType dt) -> Outputs {
    Tensor out = be->empty({n, f}, dt);
    be->swiglu_forward(tensor(*be, {n, 2 * f}, h, dt), out);
    return {host(*be, out)};
  };
  const Vec out = forward(DType::F64)[0];
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < f; ++j) {
      const double g = h[i * 2 * f + j], u = h[i * 2 * f + f + j];
      EXPECT_NEAR(out[i * f + j], g / (1 + std::exp(-g)) * u, 1e-14);
    }
  Tensor th = tensor(*be, {n, 2 * f}, h), dh = be->empty({n, 2 * f}, DType::F64);
  const Outputs g =
      accumulated_grads(*be, {dh}, [&] { be->swiglu_backward(tensor(*be, {n, f}, r), th, dh); }, "swiglu");
  const double err = fd_check({&h}, g, [&] { return dot(r, forward(DType::F64)[0]); });
  report("swiglu backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  const double e32 = f32_vs_f64(forward);
  report("swiglu forward f32 vs f64", e32);
  EXPECT_LT(e32, 1e-5);
}

TEST(OpCrossEntropy, MatchesNaiveAndFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 6, v = 11;
  Vec logits = randn(n * v, 1, 3.0);
  const std::vector<int32_t> tg = {0, 10, 3, 3, 7, 1};
  Tensor ttg = tensor_i32(*be, {n}, tg);
  const double scale = 0.37;
  auto run = [&](DType dt, double* loss) -> Outputs {
    Tensor lse = be->empty({n}, dt);
    *loss = be->cross_entropy_forward(tensor(*be, {n, v}, logits, dt), ttg, lse);
    return {host(*be, lse), {*loss}};
  };
  double loss = 0;
  const Outputs o = run(DType::F64, &loss);
  double naive = 0, ref_err = 0;
  for (int64_t i = 0; i < n; ++i) {
    long double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp((long double)logits[i * v + j]);
    const double lse = double(std::log(s));
    ref_err = std::max(ref_err, rel_err(o[0][i], lse));
    naive += lse - logits[i * v + tg[i]];
  }
  ref_err = std::max(ref_err, rel_err(loss, naive));
  report("cross_entropy forward vs naive", ref_err);
  EXPECT_LT(ref_err, 1e-14);
  Tensor tl = tensor(*be, {n, v}, logits), tlse = tensor(*be, {n}, o[0]), dl = be->empty({n, v}, DType::F64);
  const Outputs g = accumulated_grads(
      *be, {dl}, [&] { be->cross_entropy_backward(tl, ttg, tlse, scale, dl); }, "cross_entropy");
  const double err = fd_check({&logits}, g, [&] {
    double l = 0;
    run(DType::F64, &l);
    return scale * l;
  });
  report("cross_entropy backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  const double e32 = f32_vs_f64([&](DType dt) {
    double l = 0;
    return run(dt, &l);
  });
  report("cross_entropy forward f32 vs f64", e32);
  EXPECT_LT(e32, 1e-5);
  EXPECT_THROW(be->cross_entropy_forward(tl, tensor_i32(*be, {n}, {0, 1, 2, 3, 4, 11}), tlse), std::out_of_range);
}

TEST(OpAdamW, GradScaleEqualsScalingTheGradientFirst) {
  auto be = make_cpu_backend();
  AdamWArgs args;
  args.lr = 0.1;
  args.weight_decay = 0.1;
  args.step = 2;
  const Vec p = {0.5, -1.0, 2.0}, g = {0.1, -0.2, 0.3}, m = {0.01, 0.0, -0.02}, v = {0.001, 0.002, 0.0};
  Vec g_scaled = g;
  for (double& x : g_scaled) x *= 0.25;
  Tensor p1 = tensor(*be, {3}, p, DType::F64), m1 = tensor(*be, {3}, m, DType::F64), v1 = tensor(*be, {3}, v, DType::F64);
  Tensor p2 = tensor(*be, {3}, p, DType::F64), m2 = tensor(*be, {3}, m, DType::F64), v2 = tensor(*be, {3}, v, DType::F64);
  be->adamw_update(p1, tensor(*be, {3}, g_scaled, DType::F64), m1, v1, args);
  args.grad_scale = 0.25;
  be->adamw_update(p2, tensor(*be, {3}, g, DType::F64), m2, v2, args);
  const Vec a = host(*be, p1), b = host(*be, p2);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-15);
  EXPECT_NE(a[0], host(*be, tensor(*be, {3}, p, DType::F64))[0]);
}

TEST(OpAdamW, MatchesHandComputation) {
  auto be = make_cpu_backend();
  AdamWArgs args;
  args.lr = 0.1;
  args.beta1 = 0.9;
  args.beta2 = 0.95;
  args.eps = 1e-8;
  args.weight_decay = 0.1;
  args.step = 3;
  const Vec p = {0.5, -1.0, 2.0}, g = {0.1, -0.2, 0.3}, m = {0.01, 0.0, -0.02}, v = {0.001, 0.002, 0.0};
  // Element 0 by hand: m' = 0.9*0.01 + 0.1*0.1 = 0.019, v' = 0.95*0.001 + 0.05*0.01 = 0.00145,
  // mhat = 0.019 / (1 - 0.9^3) = 0.019 / 0.271, vhat = 0.00145 / (1 - 0.95^3) = 0.00145 / 0.142625,
  // p' = 0.5 - 0.1 * (0.1 * 0.5 + mhat / (sqrt(vhat) + 1e-8)).
  const double p0 = 0.5 - 0.1 * (0.05 + (0.019 / 0.271) / (std::sqrt(0.00145 / 0.142625) + 1e-8));
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor tp = tensor(*be, {3}, p, dt), tg = tensor(*be, {3}, g, dt), tm = tensor(*be, {3}, m, dt),
           tv = tensor(*be, {3}, v, dt);
    be->adamw_update(tp, tg, tm, tv, args);
    const Vec np = host(*be, tp), nm = host(*be, tm), nv = host(*be, tv);
    const double tol = dt == DType::F64 ? 1e-15 : 1e-6;
    EXPECT_NEAR(nm[0], 0.019, tol);
    EXPECT_NEAR(nv[0], 0.00145, tol);
    EXPECT_NEAR(np[0], p0, tol);
    for (int i = 1; i < 3; ++i) {
      const double mi = 0.9 * m[i] + 0.1 * g[i], vi = 0.95 * v[i] + 0.05 * g[i] * g[i];
      const double want = p[i] - 0.1 * (0.1 * p[i] + (mi / 0.271) / (std::sqrt(vi / 0.142625) + 1e-8));
      EXPECT_NEAR(nm[i], mi, tol);
      EXPECT_NEAR(nv[i], vi, tol);
      EXPECT_NEAR(np[i], want, tol * 10);
    }
  }
  EXPECT_THROW(be->adamw_update(be->empty({3}, DType::F32), be->empty({2}, DType::F32), be->empty({3}, DType::F32),
                                be->empty({3}, DType::F32), args),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy
