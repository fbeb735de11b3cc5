// SwiGLU (plain and clamped) and RoPE kernels against the CPU backend's ops in float64.
#include <cmath>

#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

// GPT-OSS's clamped form at a limit the inputs (scale 2) cross on every side, with some gates
// and ups set exactly to +-limit, where torch.clamp's convention passes the gradient. The limits
// are exact in bf16, so both sides compare the same values against the same bound.
void set_at_bounds(Vec& h, int64_t n, int64_t f, double lim) {
  for (int64_t i = 0; i < n * f; ++i) {
    const int64_t row = i / f, col = i % f;
    if (i % 7 == 3) h[row * 2 * f + col] = lim;                              // gate at the limit
    if (i % 11 == 5) h[row * 2 * f + f + col] = (i % 2 ? lim : -lim);        // up at either bound
  }
}

// How many gate and up inputs each clamp changes (above the gate's limit; above, below the up's).
struct Binds {
  int gate = 0, up_hi = 0, up_lo = 0, at_bound = 0;
};
Binds count_binds(const Vec& h, int64_t n, int64_t f, double lim) {
  Binds b;
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < f; ++col) {
      const double g = h[row * 2 * f + col], u = h[row * 2 * f + f + col];
      b.gate += g > lim, b.up_hi += u > lim, b.up_lo += u < -lim;
      b.at_bound += (g == lim) + (std::abs(u) == lim);
    }
  return b;
}

template <class T> void check_swiglu(const Backend::GluOpts& glu, ErrorLog& fwd_log, ErrorLog& bwd_log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 300;
  const GluParams p = glu.clamped() ? GluParams{float(glu.alpha), float(glu.limit)} : GluParams{};
  Binds all;
  // Widths around the warp, odd row counts, and a size past one grid-stride sweep of the grid.
  for (auto [n, f] : {std::pair<int64_t, int64_t>{1, 1}, {3, 31}, {7, 33}, {37, 300}, {5, 1025}}) {
    Vec h = random<T>(n * 2 * f, ++seed, 2.0);
    if (glu.clamped()) set_at_bounds(h, n, f, glu.limit);
    const Vec dout = random<T>(n * f, ++seed), dh0 = random<T>(n * 2 * f, ++seed);
    if (glu.clamped()) {
      const Binds b = count_binds(h, n, f, glu.limit);
      all.gate += b.gate, all.up_hi += b.up_hi, all.up_lo += b.up_lo, all.at_bound += b.at_bound;
    }
    Tensor th = tensor(*cpu, {n, 2 * f}, h), out = cpu->empty({n, f}, DType::F64);
    cpu->swiglu_forward(th, out, glu);
    auto gh = device<T>(h);
    auto gout = poisoned<T>(n * f);
    swiglu_forward<T>(gh.get(), gout.get(), n, f, nullptr, p);
    const double ef = max_err(fetch(gout), host(*cpu, out));
    fwd_log.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << n << "x" << f;

    Tensor dh = tensor(*cpu, {n, 2 * f}, dh0);
    cpu->swiglu_backward(tensor(*cpu, {n, f}, dout), th, dh, glu);
    auto gdout = device<T>(dout), gdh = device<T>(dh0);
    swiglu_backward<T>(gdout.get(), gh.get(), gdh.get(), n, f, nullptr, p);
    const Vec got = fetch(gdh), want = host(*cpu, dh);
    const double eb = max_err(got, want);
    bwd_log.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << n << "x" << f;
    if (glu.clamped()) {
      // Where a clamp binds, the gradient is exactly zero: dh keeps its start value to the bit.
      for (int64_t i = 0; i < n * f; ++i) {
        const int64_t gi = (i / f) * 2 * f + i % f, ui = gi + f;
        if (h[gi] > glu.limit) {
          EXPECT_EQ(got[gi], dh0[gi]) << "gate " << gi;
        }
        if (std::abs(h[ui]) > glu.limit) {
          EXPECT_EQ(got[ui], dh0[ui]) << "up " << ui;
        }
      }
    }
  }
  if (glu.clamped()) {
    EXPECT_GT(all.gate, 50);
    EXPECT_GT(all.up_hi, 50);
    EXPECT_GT(all.up_lo, 50);
    EXPECT_GT(all.at_bound, 50);
  }
}

class CudaSwiGlu : public KernelTest {};
TEST_F(CudaSwiGlu, Fp32MatchesCpu) {
  ErrorLog f("swiglu fwd fp32"), b("swiglu bwd fp32");
  check_swiglu<float>({}, f, b);
}
TEST_F(CudaSwiGlu, Bf16MatchesCpu) {
  ErrorLog f("swiglu fwd bf16"), b("swiglu bwd bf16");
  check_swiglu<__nv_bfloat16>({}, f, b);
}
// GPT-OSS's alpha at two limits (1.5: about a quarter of the inputs clamped on each side).
TEST_F(CudaSwiGlu, ClampedFp32MatchesCpu) {
  ErrorLog f("clamped swiglu fwd fp32"), b("clamped swiglu bwd fp32");
  check_swiglu<float>({1.702, 1.5}, f, b);
  check_swiglu<float>({0.5, 0.75}, f, b);
}
TEST_F(CudaSwiGlu, ClampedBf16MatchesCpu) {
  ErrorLog f("clamped swiglu fwd bf16"), b("clamped swiglu bwd bf16");
  check_swiglu<__nv_bfloat16>({1.702, 1.5}, f, b);
  check_swiglu<__nv_bfloat16>({0.5, 0.75}, f, b);
}

// cos/sin tables [p, hd/2] as float (what the kernel reads), theta 10000.
Vec rope_table(int64_t p, int64_t hd, bool sine) {
  Vec t(static_cast<size_t>(p * (hd / 2)));
  for (int64_t i = 0; i < p; ++i)
    for (int64_t j = 0; j < hd / 2; ++j) {
      const double angle = double(i) * std::pow(10000.0, -2.0 * double(j) / double(hd));
      t[i * (hd / 2) + j] = double(float(sine ? std::sin(angle) : std::cos(angle)));
    }
  return t;
}

template <class T> void check_rope(ErrorLog& fwd_log, ErrorLog& bwd_log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 400;
  const int64_t p = 300;
  struct S {
    int64_t n, heads, hd;
  };
  for (const S s : {S{1, 1, 2}, S{5, 3, 6}, S{33, 4, 64}, S{17, 7, 130}}) {
    const int64_t n = s.n, h = s.heads, hd = s.hd, numel = n * h * hd;
    const Vec cs = rope_table(p, hd, false), sn = rope_table(p, hd, true);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[i] = int32_t((i * 37 + 11) % p);
    const Vec x = random<T>(numel, ++seed), dy = random<T>(numel, ++seed), dx0 = random<T>(numel, ++seed);
    Tensor tpos = optest::tensor_i32(*cpu, {n}, pos), tc = tensor(*cpu, {p, hd / 2}, cs), ts = tensor(*cpu, {p, hd / 2}, sn);
    Tensor y = cpu->empty({n, h, hd}, DType::F64);
    cpu->rope_forward(tensor(*cpu, {n, h, hd}, x), tpos, tc, ts, y);
    DeviceBuffer<int32_t> gpos(pos);
    auto gc = device<float>(cs), gs = device<float>(sn);
    auto gx = device<T>(x);
    auto gy = poisoned<T>(numel);
    rope_forward<T>(gx.get(), gpos.get(), gc.get(), gs.get(), gy.get(), n, h, hd, nullptr);
    double ef = max_err(fetch(gy), host(*cpu, y));
    // In place (y aliases x), as the attention block calls it.
    rope_forward<T>(gx.get(), gpos.get(), gc.get(), gs.get(), gx.get(), n, h, hd, nullptr);
    ef = std::max(ef, max_err(fetch(gx), host(*cpu, y)));
    fwd_log.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << n << "x" << h << "x" << hd;

    Tensor dx = tensor(*cpu, {n, h, hd}, dx0);
    cpu->rope_backward(tensor(*cpu, {n, h, hd}, dy), tpos, tc, ts, dx);
    auto gdy = device<T>(dy), gdx = device<T>(dx0);
    rope_backward<T>(gdy.get(), gpos.get(), gc.get(), gs.get(), gdx.get(), n, h, hd, nullptr);
    const double eb = max_err(fetch(gdx), host(*cpu, dx));
    bwd_log.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << n << "x" << h << "x" << hd;
  }
}

class CudaRope : public KernelTest {};
TEST_F(CudaRope, Fp32MatchesCpu) {
  ErrorLog f("rope fwd fp32 (and in place)"), b("rope bwd fp32");
  check_rope<float>(f, b);
}
TEST_F(CudaRope, Bf16MatchesCpu) {
  ErrorLog f("rope fwd bf16 (and in place)"), b("rope bwd bf16");
  check_rope<__nv_bfloat16>(f, b);
}

}  // namespace
}  // namespace sy::cuda::test
