// CudaBackend's SwiGLU ops with their options against the CPU backend in float64 on the same
// (rounded) inputs: the grouped experts, plain and with GPT-OSS's clamped SwiGLU and expert
// biases (b13 before the activation, b2 on the output; their gradients as float32 column sums),
// and the dense SwiGLU's clamped form; one-line errors for bad options.
#include <cmath>
#include <functional>
#include <string>

#include "engine/cuda/backend/cuda_backend.h"
#include "engine/host_io.h"
#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

Tensor poisoned_on(Backend& gpu, const Shape& s, DType dt) {
  Tensor t = gpu.empty(s, dt);
  gpu.fill(t, std::nan(""));
  return t;
}

// Widths d and f around the warp and the bias kernels' 32-column tiles, odd sizes, empty experts
// (first, middle, last), one expert with every row, and 40 experts (two launches of the bias
// kernels).
struct Case {
  int64_t d, f;
  std::vector<int64_t> rows;
};
std::vector<Case> cases() {
  std::vector<int64_t> forty(40);
  for (int64_t g = 0; g < 40; ++g) forty[g] = g % 3 == 1 ? 0 : 1 + g % 4;
  return {{6, 5, {4, 0, 5}}, {33, 17, {0, 1, 7, 0, 13}}, {64, 40, {9, 31, 33, 0}}, {31, 1, {0, 0, 37}}, {8, 3, forty}};
}

struct Options {
  Backend::GluOpts glu;
  bool bias;
  const char* tag;
};
// Limit 1.5: with h13 of about unit scale a tenth of the gates and a fifth of the ups clamp (half
// of them below), and a clamped-below up leaves u + 1 = -0.5, not 0, so its gate still matters.
const Options kOptions[] = {{{}, false, "plain"},
                            {{}, true, "biases"},
                            {{1.702, 1.5}, false, "clamped"},
                            {{1.702, 1.5}, true, "clamped+biases"}};

struct Logs {
  ErrorLog fwd, bwd, dbias;
  explicit Logs(const std::string& w)
      : fwd("grouped swiglu fwd (y, h13, a) " + w), bwd("grouped swiglu bwd (dx, dw13, dw2) " + w),
        dbias("grouped swiglu bwd (db13, db2) " + w) {}
};

// The error measure. Every output of this op is a chain of GEMMs and a SwiGLU, and float rounding
// in a chain is relative to the sizes of the terms that meet, not to the result, which may cancel
// (bf16: the GPU rounds h13, a, da and dh13 on the way, each to 2^-9 of itself). So each element
// is measured against its scale: a GEMM output's sum of |term| (|A||B|, plus |bias| and |start|),
// a SwiGLU output's derivatives times its inputs' scales plus itself, carried down the chain as a
// first-order error bound is. An implementation is a few roundings of its scale off; a wrong or
// missing term is off by the term itself. Scale 0 demands the exact value.
double scaled_err(const Vec& got, const Vec& want, const Vec& scale) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = std::abs(got[i] - want[i]);
    worst = std::max(worst, scale[i] > 0 ? d / scale[i] : (d == 0 ? 0.0 : INFINITY));
  }
  return worst;
}

// The SwiGLU's derivatives at h [m, 2f]: d out / d gate | d out / d up, [m, 2f] (the CPU op's
// backward from ones).
Vec swiglu_slopes(Backend& cpu, const Vec& h, int64_t m, int64_t f, const Backend::GluOpts& glu) {
  Tensor dh = cpu.zeros({m, 2 * f}, DType::F64);
  cpu.swiglu_backward(tensor(cpu, {m, f}, Vec(size_t(m * f), 1.0)), tensor(cpu, {m, 2 * f}, h), dh, glu);
  Vec s = host(cpu, dh);
  for (double& v : s) v = std::abs(v);
  return s;
}

struct Problem {
  int64_t e, d, f, m;
  std::vector<int64_t> off;
  Vec x, dy, dx0;
  std::vector<Vec> w13, w2, b13, b2, dw13_0, dw2_0, db13_0, db2_0;  // per expert (biases may be unused)
  bool bias;
};

struct Scales {
  Vec h, a, y, dx;
  std::vector<Vec> dw13, dw2, db13, db2;
};

// slope_f: |derivatives| over the forward's h13 (the larger of the reference's and the GPU's, so
// that a clamp's kink between them is covered); slope_b at the h13 the backward reads; a_b the
// a it reads.
Scales scales(const Problem& p, const Vec& a_f, const Vec& slope_f, const Vec& a_b, const Vec& slope_b) {
  const int64_t d = p.d, f = p.f, m = p.m, f2 = 2 * f;
  Scales s;
  s.h.assign(size_t(m * f2), 0), s.a.assign(size_t(m * f), 0), s.y.assign(size_t(m * d), 0);
  s.dx.assign(size_t(m * d), 0);
  Vec da(size_t(m * f), 0), dh(size_t(m * f2), 0);
  for (int64_t g = 0; g < p.e; ++g) {
    const Vec &w13 = p.w13[g], &w2 = p.w2[g];
    s.dw13.push_back(p.dw13_0[g]), s.dw2.push_back(p.dw2_0[g]), s.db13.push_back(p.db13_0[g]), s.db2.push_back(p.db2_0[g]);
    for (Vec* v : {&s.dw13.back(), &s.dw2.back(), &s.db13.back(), &s.db2.back()})
      for (double& t : *v) t = std::abs(t);
    for (int64_t r = p.off[g]; r < p.off[g + 1]; ++r) {
      for (int64_t j = 0; j < f2; ++j) {  // h13 = x w13^T + b13
        double t = p.bias ? std::abs(p.b13[g][j]) : 0;
        for (int64_t c = 0; c < d; ++c) t += std::abs(p.x[r * d + c] * w13[j * d + c]);
        s.h[r * f2 + j] = t;
      }
      for (int64_t j = 0; j < f; ++j)  // a = act(gate, up)
        s.a[r * f + j] = slope_f[r * f2 + j] * s.h[r * f2 + j] + slope_f[r * f2 + f + j] * s.h[r * f2 + f + j] +
                         std::abs(a_f[r * f + j]);
      for (int64_t c = 0; c < d; ++c) {  // y = a w2 + b2
        double t = p.bias ? std::abs(p.b2[g][c]) : 0;
        for (int64_t j = 0; j < f; ++j) t += s.a[r * f + j] * std::abs(w2[j * d + c]);
        s.y[r * d + c] = t;
      }
      for (int64_t j = 0; j < f; ++j) {  // da = dy w2^T; dh13 = slopes * da
        double t = 0;
        for (int64_t c = 0; c < d; ++c) t += std::abs(p.dy[r * d + c] * w2[j * d + c]);
        da[r * f + j] = t;
        dh[r * f2 + j] = slope_b[r * f2 + j] * t, dh[r * f2 + f + j] = slope_b[r * f2 + f + j] * t;
      }
      for (int64_t c = 0; c < d; ++c) {  // dx += dh13 w13
        double t = std::abs(p.dx0[r * d + c]);
        for (int64_t j = 0; j < f2; ++j) t += dh[r * f2 + j] * std::abs(w13[j * d + c]);
        s.dx[r * d + c] = t;
      }
      for (int64_t j = 0; j < f2; ++j) {  // dw13 += dh13^T x, db13 += colsum dh13
        for (int64_t c = 0; c < d; ++c) s.dw13[g][j * d + c] += dh[r * f2 + j] * std::abs(p.x[r * d + c]);
        s.db13[g][j] += dh[r * f2 + j];
      }
      for (int64_t j = 0; j < f; ++j)  // dw2 += a^T dy
        for (int64_t c = 0; c < d; ++c) s.dw2[g][j * d + c] += std::abs(a_b[r * f + j] * p.dy[r * d + c]);
      for (int64_t c = 0; c < d; ++c) s.db2[g][c] += std::abs(p.dy[r * d + c]);  // db2 += colsum dy
    }
  }
  return s;
}

template <class T> Problem draw(const Case& c, bool bias, uint64_t& seed) {
  Problem p;
  p.e = int64_t(c.rows.size()), p.d = c.d, p.f = c.f, p.bias = bias;
  p.off = {0};
  for (int64_t r : c.rows) p.off.push_back(p.off.back() + r);
  p.m = p.off.back();
  const int64_t d = p.d, f = p.f, m = p.m;
  // Inputs in T; the weight gradients' starts in float32 (the master gradients).
  p.x = random<T>(m * d, ++seed), p.dy = random<T>(m * d, ++seed), p.dx0 = random<T>(m * d, ++seed);
  for (int64_t g = 0; g < p.e; ++g) {
    p.w13.push_back(random<T>(2 * f * d, ++seed, 1.0 / std::sqrt(double(d))));
    p.w2.push_back(random<T>(f * d, ++seed, 1.0 / std::sqrt(double(f))));
    p.b13.push_back(random<T>(2 * f, ++seed, 0.5)), p.b2.push_back(random<T>(d, ++seed, 0.5));
    p.dw13_0.push_back(random<float>(2 * f * d, ++seed)), p.dw2_0.push_back(random<float>(f * d, ++seed));
    p.db13_0.push_back(random<float>(2 * f, ++seed)), p.db2_0.push_back(random<float>(d, ++seed));
  }
  return p;
}

// One backend's weights, biases and gradient starts (host_side: the CPU's float64 tensors).
struct Side {
  std::vector<Tensor> w13, w2, b13, b2, dw13, dw2, db13, db2;
};
Side side(Backend& be, const Problem& p, DType t, DType gt, bool host_side) {
  Side s;
  auto mk = [&](const Shape& sh, const Vec& v, DType ty) { return host_side ? tensor(be, sh, v, ty) : to_device(be, sh, v, ty); };
  const int64_t d = p.d, f = p.f;
  for (int64_t g = 0; g < p.e; ++g) {
    s.w13.push_back(mk({2 * f, d}, p.w13[g], t)), s.w2.push_back(mk({f, d}, p.w2[g], t));
    s.dw13.push_back(mk({2 * f, d}, p.dw13_0[g], gt)), s.dw2.push_back(mk({f, d}, p.dw2_0[g], gt));
    if (!p.bias) continue;
    s.b13.push_back(mk({2 * f}, p.b13[g], t)), s.b2.push_back(mk({d}, p.b2[g], t));
    s.db13.push_back(mk({2 * f}, p.db13_0[g], gt)), s.db2.push_back(mk({d}, p.db2_0[g], gt));
  }
  return s;
}

template <class T> void check_grouped(const Options& o, Logs& log) {
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::BF16, f64 = DType::F64, f32 = DType::F32;
  auto cpu = make_cpu_backend();
  auto gpu = make_backend();
  uint64_t seed = 2100;
  int clamped_gate = 0, clamped_up_hi = 0, clamped_up_lo = 0;
  for (const Case& c : cases()) {
    const Problem p = draw<T>(c, o.bias, seed);
    const int64_t e = p.e, d = p.d, f = p.f, m = p.m;
    const std::string where = std::string(o.tag) + " d " + std::to_string(d) + " f " + std::to_string(f) + " E " +
                              std::to_string(e) + " M " + std::to_string(m);
    const Backend::ExpertOpts none{o.glu, {}, {}};
    // The forward: the CPU op in float64 against the CUDA op, its outputs poisoned first.
    const Side rc = side(*cpu, p, f64, f64, true), rg = side(*gpu, p, dt, f32, false);
    Tensor cx = tensor(*cpu, {m, d}, p.x), ch = cpu->empty({m, 2 * f}, f64), ca = cpu->empty({m, f}, f64),
           cy = cpu->empty({m, d}, f64);
    Backend::ExpertOpts copts = none, gopts = none;
    copts.b13 = rc.b13, copts.b2 = rc.b2, gopts.b13 = rg.b13, gopts.b2 = rg.b2;
    cpu->grouped_swiglu_forward(cx, p.off, rc.w13, rc.w2, ch, ca, cy, copts);
    Tensor gx = to_device(*gpu, {m, d}, p.x, dt), gh = poisoned_on(*gpu, {m, 2 * f}, dt), ga = poisoned_on(*gpu, {m, f}, dt),
           gy = poisoned_on(*gpu, {m, d}, dt), gdx = to_device(*gpu, {m, d}, p.dx0, dt);
    gpu->grouped_swiglu_forward(gx, p.off, rg.w13, rg.w2, gh, ga, gy, gopts);
    const Vec want_h = host(*cpu, ch), want_a = host(*cpu, ca), got_h = from_device(*gpu, gh), got_a = from_device(*gpu, ga);
    for (int64_t i = 0; i < m * f; ++i) {
      const double g = want_h[(i / f) * 2 * f + i % f], u = want_h[(i / f) * 2 * f + f + i % f];
      clamped_gate += g > o.glu.limit, clamped_up_hi += u > o.glu.limit, clamped_up_lo += u < -o.glu.limit;
    }

    // The backward from the same saved h13 and a on both sides (the GPU forward's), as the
    // backward op's inputs are: a clamp's decision then is the same on both.
    Tensor ch_b = tensor(*cpu, {m, 2 * f}, got_h), ca_b = tensor(*cpu, {m, f}, got_a), cdx = tensor(*cpu, {m, d}, p.dx0);
    cpu->grouped_swiglu_backward(tensor(*cpu, {m, d}, p.dy), cx, p.off, rc.w13, rc.w2, ch_b, ca_b, cdx, rc.dw13, rc.dw2,
                                 copts, rc.db13, rc.db2);
    gpu->grouped_swiglu_backward(to_device(*gpu, {m, d}, p.dy, dt), gx, p.off, rg.w13, rg.w2, gh, ga, gdx, rg.dw13, rg.dw2,
                                 gopts, rg.db13, rg.db2);

    Vec slope_f = swiglu_slopes(*cpu, want_h, m, f, o.glu);
    const Vec slope_b = swiglu_slopes(*cpu, got_h, m, f, o.glu);
    for (size_t i = 0; i < slope_f.size(); ++i) slope_f[i] = std::max(slope_f[i], slope_b[i]);
    const Scales sc = scales(p, want_a, slope_f, got_a, slope_b);
    const double ef = std::max({scaled_err(from_device(*gpu, gy), host(*cpu, cy), sc.y), scaled_err(got_h, want_h, sc.h),
                                scaled_err(got_a, want_a, sc.a)});
    log.fwd.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << where;
    double eb = scaled_err(from_device(*gpu, gdx), host(*cpu, cdx), sc.dx), edb = 0;
    for (int64_t g = 0; g < e; ++g) {
      const Vec gw13 = from_device(*gpu, rg.dw13[g]), gw2 = from_device(*gpu, rg.dw2[g]);
      eb = std::max({eb, scaled_err(gw13, host(*cpu, rc.dw13[g]), sc.dw13[g]),
                     scaled_err(gw2, host(*cpu, rc.dw2[g]), sc.dw2[g])});
      if (c.rows[g] == 0) {  // no rows: no gradient, to the bit
        EXPECT_EQ(gw13, p.dw13_0[g]) << where << " expert " << g;
        EXPECT_EQ(gw2, p.dw2_0[g]) << where << " expert " << g;
      }
      if (!o.bias) continue;
      const Vec gb13 = from_device(*gpu, rg.db13[g]), gb2 = from_device(*gpu, rg.db2[g]);
      edb = std::max({edb, scaled_err(gb13, host(*cpu, rc.db13[g]), sc.db13[g]),
                      scaled_err(gb2, host(*cpu, rc.db2[g]), sc.db2[g])});
      if (c.rows[g] == 0) {
        EXPECT_EQ(gb13, p.db13_0[g]) << where << " expert " << g;
        EXPECT_EQ(gb2, p.db2_0[g]) << where << " expert " << g;
      }
    }
    log.bwd.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << where;
    if (o.bias) {
      log.dbias.add(edb);
      EXPECT_LT(edb, tolerance<T>()) << where;
    }
  }
  if (o.glu.clamped()) {  // every clamp bound somewhere
    EXPECT_GT(clamped_gate, 20);
    EXPECT_GT(clamped_up_hi, 20);
    EXPECT_GT(clamped_up_lo, 20);
  }
}

class CudaGroupedSwiglu : public KernelTest {};

// An empty expert's bias gradients are exactly zero from zero, and a zero gradient comes from
// nowhere else: with dy = 0 every gradient stays 0.
TEST_F(CudaGroupedSwiglu, EmptyExpertBiasGradientIsExactlyZero) {
  auto gpu = make_backend();
  const int64_t d = 5, f = 3, m = 4;
  const std::vector<int64_t> offsets{0, 4, 4};
  std::vector<Tensor> w13, w2, b13, b2, dw13, dw2, db13, db2;
  for (int g = 0; g < 2; ++g) {
    w13.push_back(to_device(*gpu, {2 * f, d}, random<float>(2 * f * d, 10 + g), DType::F32));
    w2.push_back(to_device(*gpu, {f, d}, random<float>(f * d, 20 + g), DType::F32));
    b13.push_back(to_device(*gpu, {2 * f}, random<float>(2 * f, 30 + g), DType::F32));
    b2.push_back(to_device(*gpu, {d}, random<float>(d, 40 + g), DType::F32));
    dw13.push_back(gpu->zeros({2 * f, d}, DType::F32)), dw2.push_back(gpu->zeros({f, d}, DType::F32));
    db13.push_back(gpu->zeros({2 * f}, DType::F32)), db2.push_back(gpu->zeros({d}, DType::F32));
  }
  Tensor x = to_device(*gpu, {m, d}, random<float>(m * d, 1), DType::F32), h = gpu->empty({m, 2 * f}, DType::F32),
         a = gpu->empty({m, f}, DType::F32), y = gpu->empty({m, d}, DType::F32), dx = gpu->zeros({m, d}, DType::F32);
  const Backend::ExpertOpts opts{{1.702, 1.0}, b13, b2};
  gpu->grouped_swiglu_forward(x, offsets, w13, w2, h, a, y, opts);
  gpu->grouped_swiglu_backward(to_device(*gpu, {m, d}, random<float>(m * d, 2), DType::F32), x, offsets, w13, w2, h, a, dx,
                               dw13, dw2, opts, db13, db2);
  for (double v : from_device(*gpu, db13[1])) EXPECT_EQ(v, 0.0);
  for (double v : from_device(*gpu, db2[1])) EXPECT_EQ(v, 0.0);
  double moved = 0;
  for (double v : from_device(*gpu, db2[0])) moved += std::abs(v);
  EXPECT_GT(moved, 0.1);  // the expert with rows does get one
}

TEST_F(CudaGroupedSwiglu, Fp32MatchesCpu) {
  Logs log("fp32");
  for (const Options& o : kOptions) check_grouped<float>(o, log);
}
TEST_F(CudaGroupedSwiglu, Bf16MatchesCpu) {
  Logs log("bf16");
  for (const Options& o : kOptions) check_grouped<__nv_bfloat16>(o, log);
}

// One-line std::invalid_argument naming the op, for what the CPU backend refuses too.
void expect_one_line(const std::function<void()>& call, const char* op) {
  try {
    call();
    ADD_FAILURE() << op << " accepted bad options";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind(std::string(op) + ": ", 0), 0u) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

TEST_F(CudaGroupedSwiglu, ChecksOptions) {
  auto gpu = make_backend();
  const DType f32 = DType::F32, bf = DType::BF16;
  const int64_t d = 4, f = 3, m = 2;
  const std::vector<int64_t> offsets{0, 1, 2};
  std::vector<Tensor> w13, w2, b13, b2, dw13, dw2, db13, db2;
  for (int g = 0; g < 2; ++g) {
    w13.push_back(gpu->zeros({2 * f, d}, bf)), w2.push_back(gpu->zeros({f, d}, bf));
    b13.push_back(gpu->zeros({2 * f}, bf)), b2.push_back(gpu->zeros({d}, bf));
    dw13.push_back(gpu->zeros({2 * f, d}, f32)), dw2.push_back(gpu->zeros({f, d}, f32));
    db13.push_back(gpu->zeros({2 * f}, f32)), db2.push_back(gpu->zeros({d}, f32));
  }
  Tensor x = gpu->zeros({m, d}, bf), h = gpu->zeros({m, 2 * f}, bf), a = gpu->zeros({m, f}, bf),
         y = gpu->zeros({m, d}, bf), dx = gpu->zeros({m, d}, bf);
  auto fwd = [&](Backend::ExpertOpts o) {
    return [&, o] { gpu->grouped_swiglu_forward(x, offsets, w13, w2, h, a, y, o); };
  };
  auto bwd = [&](Backend::ExpertOpts o, std::span<const Tensor> g13, std::span<const Tensor> g2) {
    return [&, o, g13, g2] { gpu->grouped_swiglu_backward(y, x, offsets, w13, w2, h, a, dx, dw13, dw2, o, g13, g2); };
  };
  const char *f_op = "grouped_swiglu_forward", *b_op = "grouped_swiglu_backward";
  // The good calls run (bf16 activations and biases, float32 gradients).
  fwd({{1.702, 7.0}, b13, b2})();
  bwd({{1.702, 7.0}, b13, b2}, db13, db2)();
  expect_one_line(fwd({{1.702, -1.0}, {}, {}}), f_op);  // limit < 0
  expect_one_line(fwd({{2.0, 0.0}, {}, {}}), f_op);     // alpha without a limit
  expect_one_line(fwd({{}, std::span(b13).first(1), b2}), f_op);  // one gate|up bias for two experts
  expect_one_line(fwd({{}, b13, {}}), f_op);                      // gate|up biases without down biases
  expect_one_line(fwd({{}, db13, db2}), f_op);                    // float32 biases on bf16 activations
  std::vector<Tensor> wide{gpu->zeros({2 * f + 1}, bf), gpu->zeros({2 * f + 1}, bf)};
  expect_one_line(fwd({{}, wide, b2}), f_op);                     // [2F + 1]
  expect_one_line(bwd({{}, b13, b2}, {}, {}), b_op);              // biases, no bias gradients
  expect_one_line(bwd({{}, {}, {}}, db13, db2), b_op);            // bias gradients, no biases
  expect_one_line(bwd({{}, b13, b2}, b13, b2), b_op);             // bf16 bias gradients (the masters are float32)
  expect_one_line(bwd({{1.0, -2.0}, b13, b2}, db13, db2), b_op);
}

// The dense SwiGLU's clamped form through the backend (the options reach the kernels).
TEST_F(CudaGroupedSwiglu, DenseClampedSwigluMatchesCpu) {
  auto cpu = make_cpu_backend();
  auto gpu = make_backend();
  const int64_t n = 9, f = 37;
  const Backend::GluOpts glu{1.702, 1.25};
  const Vec h = random<float>(n * 2 * f, 7, 2.0), dout = random<float>(n * f, 8), dh0 = random<float>(n * 2 * f, 9);
  Tensor ch = tensor(*cpu, {n, 2 * f}, h), cout = cpu->empty({n, f}, DType::F64), cdh = tensor(*cpu, {n, 2 * f}, dh0);
  cpu->swiglu_forward(ch, cout, glu);
  cpu->swiglu_backward(tensor(*cpu, {n, f}, dout), ch, cdh, glu);
  Tensor gh = to_device(*gpu, {n, 2 * f}, h, DType::F32), gout = poisoned_on(*gpu, {n, f}, DType::F32),
         gdh = to_device(*gpu, {n, 2 * f}, dh0, DType::F32);
  gpu->swiglu_forward(gh, gout, glu);
  gpu->swiglu_backward(to_device(*gpu, {n, f}, dout, DType::F32), gh, gdh, glu);
  EXPECT_LT(max_err(from_device(*gpu, gout), host(*cpu, cout)), 1e-5);
  EXPECT_LT(max_err(from_device(*gpu, gdh), host(*cpu, cdh)), 1e-5);
  expect_one_line([&] { gpu->swiglu_forward(gh, gout, Backend::GluOpts{1.702, 0}); }, "swiglu_forward");
  expect_one_line([&] { gpu->swiglu_backward(gout, gh, gdh, Backend::GluOpts{1.0, -1.0}); }, "swiglu_backward");
}

}  // namespace
}  // namespace sy::cuda::test
