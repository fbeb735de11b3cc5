// SwiGLU and RoPE kernels against the CPU backend's ops in float64.
#include <cmath>

#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

template <class T> void check_swiglu(ErrorLog& fwd_log, ErrorLog& bwd_log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 300;
  // Widths around the warp, odd row counts, and a size past one grid-stride sweep of the grid.
  for (auto [n, f] : {std::pair<int64_t, int64_t>{1, 1}, {3, 31}, {7, 33}, {37, 300}, {5, 1025}}) {
    const Vec h = random<T>(n * 2 * f, ++seed, 2.0), dout = random<T>(n * f, ++seed), dh0 = random<T>(n * 2 * f, ++seed);
    Tensor th = tensor(*cpu, {n, 2 * f}, h), out = cpu->empty({n, f}, DType::F64);
    cpu->swiglu_forward(th, out);
    auto gh = device<T>(h);
    auto gout = poisoned<T>(n * f);
    swiglu_forward<T>(gh.get(), gout.get(), n, f, nullptr);
    const double ef = max_err(fetch(gout), host(*cpu, out));
    fwd_log.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << n << "x" << f;

    Tensor dh = tensor(*cpu, {n, 2 * f}, dh0);
    cpu->swiglu_backward(tensor(*cpu, {n, f}, dout), th, dh);
    auto gdout = device<T>(dout), gdh = device<T>(dh0);
    swiglu_backward<T>(gdout.get(), gh.get(), gdh.get(), n, f, nullptr);
    const double eb = max_err(fetch(gdh), host(*cpu, dh));
    bwd_log.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << n << "x" << f;
  }
}

class CudaSwiGlu : public KernelTest {};
TEST_F(CudaSwiGlu, Fp32MatchesCpu) {
  ErrorLog f("swiglu fwd fp32"), b("swiglu bwd fp32");
  check_swiglu<float>(f, b);
}
TEST_F(CudaSwiGlu, Bf16MatchesCpu) {
  ErrorLog f("swiglu fwd bf16"), b("swiglu bwd bf16");
  check_swiglu<__nv_bfloat16>(f, b);
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
