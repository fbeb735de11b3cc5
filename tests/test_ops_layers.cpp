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

// GPT-OSS's clamped SwiGLU: g = min(gate, L), u = clamp(up, -L, L), g sigmoid(a g) (u + 1), with
// inputs on both sides of both clamps.
TEST(OpSwiglu, ClampedFormMatchesDefinitionAndFiniteDifferences) {
  auto be = make_cpu_backend();
  const int64_t n = 6, f = 7;
  const Backend::GluOpts glu{1.702, 1.5};
  Vec h = randn(n * 2 * f, 3, 2.0);
  const Vec r = randn(n * f, 4);
  auto forward = [&](DType dt) -> Outputs {
    Tensor out = be->empty({n, f}, dt);
    be->swiglu_forward(tensor(*be, {n, 2 * f}, h, dt), out, glu);
    return {host(*be, out)};
  };
  const Vec out = forward(DType::F64)[0];
  int clamped_g = 0, clamped_u = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < f; ++j) {
      const double g0 = h[i * 2 * f + j], u0 = h[i * 2 * f + f + j];
      const double g = std::min(g0, 1.5), u = std::clamp(u0, -1.5, 1.5);
      clamped_g += g0 > 1.5, clamped_u += std::abs(u0) > 1.5;
      EXPECT_NEAR(out[i * f + j], g / (1 + std::exp(-1.702 * g)) * (u + 1), 1e-14);
    }
  EXPECT_GT(clamped_g, 3);  // both clamps bind somewhere
  EXPECT_GT(clamped_u, 3);
  Tensor th = tensor(*be, {n, 2 * f}, h), dh = be->empty({n, 2 * f}, DType::F64);
  const Outputs g =
      accumulated_grads(*be, {dh}, [&] { be->swiglu_backward(tensor(*be, {n, f}, r), th, dh, glu); }, "swiglu");
  const double err = fd_check({&h}, g, [&] { return dot(r, forward(DType::F64)[0]); });
  report("clamped swiglu backward vs FD", err);
  EXPECT_LE(err, 1e-6);
  const double e32 = f32_vs_f64(forward);
  report("clamped swiglu forward f32 vs f64", e32);
  EXPECT_LT(e32, 1e-5);
  EXPECT_THROW(be->swiglu_forward(th, be->empty({n, f}, DType::F64), Backend::GluOpts{1.702, 0}), std::invalid_argument);
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

// Vocabulary-parallel cross-entropy: the logits split into `t` column shards; the shard ops and
// max/sum reductions over the shards (done here as the TP group does them) give the plain op's
// lse and loss, and each shard's backward (targets outside it as -1) is that shard's columns of
// the plain backward. Targets fall in every shard.
void check_vocab_parallel(int64_t t, DType dt, double tol) {
  auto be = make_cpu_backend();
  const int64_t n = 9, v = 12, vs = v / t;
  const Vec logits = randn(n * v, 5, 4.0);
  std::vector<int32_t> tg(n);
  for (int64_t i = 0; i < n; ++i) tg[i] = int32_t((i * 5 + 1) % v);  // 1, 6, 11, 4, 9, 2, 7, 0, 5
  const Tensor full = tensor(*be, {n, v}, logits, dt), lse = be->empty({n}, dt);
  const double loss = be->cross_entropy_forward(full, tensor_i32(*be, {n}, tg), lse);
  const Vec lse_ref = host(*be, lse);
  Tensor dfull = be->zeros({n, v}, dt);
  be->cross_entropy_backward(full, tensor_i32(*be, {n}, tg), lse, 0.3, dfull);
  const Vec dref = host(*be, dfull);

  std::vector<Tensor> shard(t), local_tg(t);
  std::vector<int> owners(t, 0);
  Vec gmax(n, -INFINITY);
  for (int64_t r = 0; r < t; ++r) {
    Vec part(n * vs);
    std::vector<int32_t> ltg(n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < vs; ++j) part[i * vs + j] = logits[i * v + r * vs + j];
      ltg[i] = tg[i] >= r * vs && tg[i] < (r + 1) * vs ? int32_t(tg[i] - r * vs) : -1;
      owners[r] += ltg[i] >= 0;
    }
    shard[r] = tensor(*be, {n, vs}, part, dt);
    local_tg[r] = tensor_i32(*be, {n}, ltg);
    Tensor mx = be->empty({n}, dt);
    be->logits_row_max(shard[r], mx);
    const Vec m = host(*be, mx);
    for (int64_t i = 0; i < n; ++i) gmax[i] = std::max(gmax[i], m[i]);
  }
  for (int64_t r = 0; r < t; ++r) EXPECT_GT(owners[r], 0) << "no target in shard " << r;
  Vec sum_exp(n, 0.0), target(n, 0.0);
  const Tensor gm = tensor(*be, {n}, gmax, dt);
  for (int64_t r = 0; r < t; ++r) {
    Tensor se = be->empty({n}, dt), tl = be->empty({n}, dt);
    be->cross_entropy_shard_sums(shard[r], local_tg[r], gm, se, tl);
    const Vec a = host(*be, se), b = host(*be, tl);
    for (int64_t i = 0; i < n; ++i) sum_exp[i] += a[i], target[i] += b[i];
  }
  Vec lse_vp(n);
  double loss_vp = 0, err = 0;
  for (int64_t i = 0; i < n; ++i) {
    lse_vp[i] = gmax[i] + std::log(sum_exp[i]);
    loss_vp += lse_vp[i] - target[i];
    err = std::max(err, rel_err(lse_vp[i], lse_ref[i]));
  }
  err = std::max(err, rel_err(loss_vp, loss));
  const Tensor lse_t = tensor(*be, {n}, lse_vp, dt);
  for (int64_t r = 0; r < t; ++r) {
    Tensor d = be->zeros({n, vs}, dt);
    be->cross_entropy_backward(shard[r], local_tg[r], lse_t, 0.3, d);
    const Vec g = host(*be, d);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < vs; ++j) err = std::max(err, rel_err(g[i * vs + j], dref[i * v + r * vs + j]));
  }
  report("vocab-parallel cross-entropy over " + std::to_string(t) + " shards vs plain", err);
  EXPECT_LT(err, tol);
}

TEST(OpCrossEntropy, VocabParallelShardsMatchThePlainOp) {
  for (int64_t t : {2, 3, 4}) {
    check_vocab_parallel(t, DType::F64, 1e-13);
    check_vocab_parallel(t, DType::F32, 1e-5);
  }
}

TEST(OpEmbedding, IdsOfOtherShardsGiveZeroRowsAndNoGradient) {
  auto be = make_cpu_backend();
  const Vec table = randn(3 * 4, 2);
  Tensor out = be->empty({3, 4}, DType::F64);
  be->embedding_forward(tensor(*be, {3, 4}, table), tensor_i32(*be, {3}, {2, -1, 0}), out);
  const Vec o = host(*be, out);
  for (int64_t j = 0; j < 4; ++j) {
    EXPECT_EQ(o[j], table[2 * 4 + j]);
    EXPECT_EQ(o[4 + j], 0.0);
    EXPECT_EQ(o[8 + j], table[j]);
  }
  Tensor dt = be->zeros({3, 4}, DType::F64);
  be->embedding_backward(tensor(*be, {3, 4}, Vec(12, 1.0)), tensor_i32(*be, {3}, {2, -1, 2}), dt);
  const Vec g = host(*be, dt);
  for (int64_t j = 0; j < 4; ++j) {
    EXPECT_EQ(g[j], 0.0);
    EXPECT_EQ(g[4 + j], 0.0);
    EXPECT_EQ(g[8 + j], 2.0);
  }
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
