// RMSNorm kernels against the CPU backend's rmsnorm_forward / rmsnorm_backward in float64.
#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

struct Shape2 {
  int64_t n, d;
};
// Odd sizes, widths below, between and above multiples of the warp (32) and the block (256), and
// a row count that leaves a partial backward chunk (32 rows each).
const Shape2 kShapes[] = {{1, 1}, {3, 31}, {7, 33}, {37, 257}, {70, 1000}, {5, 2049}};

template <class T> void check_rmsnorm(ErrorLog& fwd_log, ErrorLog& bwd_log) {
  auto cpu = make_cpu_backend();
  const double eps = 1e-5;
  uint64_t seed = 100;
  for (const Shape2& s : kShapes) {
    const int64_t n = s.n, d = s.d;
    const Vec x = random<T>(n * d, ++seed), w = random<T>(d, ++seed), dy = random<T>(n * d, ++seed);
    Tensor tx = tensor(*cpu, {n, d}, x), tw = tensor(*cpu, {d}, w);
    Tensor y = cpu->empty({n, d}, DType::F64), rstd = cpu->empty({n}, DType::F64);
    cpu->rmsnorm_forward(tx, tw, eps, y, rstd);

    auto gx = device<T>(x), gw = device<T>(w);
    auto gy = poisoned<T>(n * d);
    auto grstd = poisoned<float>(n);
    rmsnorm_forward<T>(gx.get(), gw.get(), float(eps), gy.get(), grstd.get(), n, d, nullptr);
    const double ef = std::max(max_err(fetch(gy), host(*cpu, y)), max_err(fetch(grstd), host(*cpu, rstd)));
    fwd_log.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << "n " << n << " d " << d;

    // Backward from random starting gradients; the kernel reads the rstd the CPU saved (as float).
    const Vec dx0 = random<T>(n * d, ++seed), dw0 = random<float>(d, ++seed);
    Tensor dx = tensor(*cpu, {n, d}, dx0), dw = tensor(*cpu, {d}, dw0);
    cpu->rmsnorm_backward(tensor(*cpu, {n, d}, dy), tx, tw, rstd, dx, dw);
    auto gdy = device<T>(dy), gdx = device<T>(dx0);
    auto gdw = device<float>(dw0);
    DeviceBuffer<float> scratch(rmsnorm_backward_scratch(n, d));
    rmsnorm_backward<T>(gdy.get(), gx.get(), gw.get(), grstd.get(), gdx.get(), gdw.get(), scratch.get(), n, d,
                        nullptr);
    const double eb = std::max(max_err(fetch(gdx), host(*cpu, dx)), max_err(fetch(gdw), host(*cpu, dw)));
    bwd_log.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << "n " << n << " d " << d;
  }
}

class CudaRmsNorm : public KernelTest {};

TEST_F(CudaRmsNorm, Fp32MatchesCpu) {
  ErrorLog f("rmsnorm fwd fp32"), b("rmsnorm bwd fp32");
  check_rmsnorm<float>(f, b);
}

TEST_F(CudaRmsNorm, Bf16MatchesCpu) {
  ErrorLog f("rmsnorm fwd bf16"), b("rmsnorm bwd bf16");
  check_rmsnorm<__nv_bfloat16>(f, b);
}

}  // namespace
}  // namespace sy::cuda::test
