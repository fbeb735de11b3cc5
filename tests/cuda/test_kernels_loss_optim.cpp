// Cross-entropy, AdamW and sum-of-squares kernels against the CPU backend's ops in float64.
#include <cmath>

#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

template <class T> void check_cross_entropy(ErrorLog& fwd_log, ErrorLog& bwd_log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 500;
  for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {9, 1000}, {4, 2049}, {33, 257}}) {
    const Vec logits = random<T>(n * v, ++seed, 3.0), d0 = random<T>(n * v, ++seed, 0.01);
    std::vector<int32_t> tg(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) tg[i] = int32_t((i * 7919 + 3) % v);
    Tensor tl = tensor(*cpu, {n, v}, logits), tt = optest::tensor_i32(*cpu, {n}, tg), lse = cpu->empty({n}, DType::F64);
    const double loss = cpu->cross_entropy_forward(tl, tt, lse);
    auto gl = device<T>(logits);
    DeviceBuffer<int32_t> gt(tg);
    auto glse = poisoned<float>(n), grow = poisoned<float>(n);
    cross_entropy_forward<T>(gl.get(), gt.get(), glse.get(), grow.get(), n, v, nullptr);
    double gloss = 0;
    for (double r : fetch(grow)) gloss += r;
    const double ef = std::max(max_err(fetch(glse), host(*cpu, lse)), std::abs(gloss - loss) / std::abs(loss));
    fwd_log.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << n << "x" << v;

    // Gradients start at values of the gradient's own size (1/n scale): a wrong softmax shows.
    const double scale = 1.0 / double(n);
    Tensor dl = tensor(*cpu, {n, v}, d0);
    cpu->cross_entropy_backward(tl, tt, lse, scale, dl);
    auto gd = device<T>(d0);
    cross_entropy_backward<T>(gl.get(), gt.get(), glse.get(), float(scale), gd.get(), n, v, nullptr);
    const double eb = max_err(fetch(gd), host(*cpu, dl));
    bwd_log.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << n << "x" << v;
  }
}

// The vocabulary-parallel pieces on a shard: targets in and outside the shard (-1), against the
// CPU ops; and the backward with -1 targets (no one-hot term).
template <class T> void check_vocab_shard(ErrorLog& log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 900;
  for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 1}, {5, 33}, {17, 300}, {3, 1025}}) {
    const Vec logits = random<T>(n * v, ++seed, 3.0), gmax_in = random<T>(n, ++seed, 1.0), d0 = random<T>(n * v, ++seed, 0.01);
    std::vector<int32_t> tg(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) tg[i] = i % 3 == 1 ? -1 : int32_t((i * 7919 + 3) % v);
    Tensor tl = tensor(*cpu, {n, v}, logits), tt = optest::tensor_i32(*cpu, {n}, tg);
    Tensor mx = cpu->empty({n}, DType::F64), gm = tensor(*cpu, {n}, gmax_in), se = cpu->empty({n}, DType::F64),
           tlg = cpu->empty({n}, DType::F64);
    cpu->logits_row_max(tl, mx);
    cpu->cross_entropy_shard_sums(tl, tt, gm, se, tlg);
    auto gl = device<T>(logits);
    auto ggm = device<float>(gmax_in);  // row statistics are float for every logits type
    DeviceBuffer<int32_t> gt(tg);
    auto gmx = poisoned<float>(n), gse = poisoned<float>(n), gtl = poisoned<float>(n);
    logits_row_max<T>(gl.get(), gmx.get(), n, v, nullptr);
    cross_entropy_shard_sums<T>(gl.get(), gt.get(), ggm.get(), gse.get(), gtl.get(), n, v, nullptr);
    double e = std::max({max_err(fetch(gmx), host(*cpu, mx)), max_err(fetch(gse), host(*cpu, se)),
                         max_err(fetch(gtl), host(*cpu, tlg))});
    // Backward on the shard with the row lse taken from the CPU's plain op over these logits.
    Tensor lse = cpu->empty({n}, DType::F64);
    std::vector<int32_t> full_tg(tg);
    for (auto& t : full_tg) t = t < 0 ? 0 : t;
    cpu->cross_entropy_forward(tl, optest::tensor_i32(*cpu, {n}, full_tg), lse);
    const Vec lse_h = host(*cpu, lse);
    Tensor dl = tensor(*cpu, {n, v}, d0);
    cpu->cross_entropy_backward(tl, tt, lse, 0.5, dl);
    auto glse = device<float>(lse_h);
    auto gd = device<T>(d0);
    cross_entropy_backward<T>(gl.get(), gt.get(), glse.get(), 0.5f, gd.get(), n, v, nullptr);
    e = std::max(e, max_err(fetch(gd), host(*cpu, dl)));
    log.add(e);
    EXPECT_LT(e, tolerance<T>()) << n << "x" << v;
  }
}

class CudaCrossEntropy : public KernelTest {};
TEST_F(CudaCrossEntropy, VocabShardFp32MatchesCpu) {
  ErrorLog l("vocab-parallel CE shard ops fp32 (row max, sums, backward)");
  check_vocab_shard<float>(l);
}
TEST_F(CudaCrossEntropy, VocabShardBf16MatchesCpu) {
  ErrorLog l("vocab-parallel CE shard ops bf16");
  check_vocab_shard<__nv_bfloat16>(l);
}
TEST_F(CudaCrossEntropy, Fp32MatchesCpu) {
  ErrorLog f("cross-entropy fwd fp32 (lse, loss)"), b("cross-entropy bwd fp32");
  check_cross_entropy<float>(f, b);
}
TEST_F(CudaCrossEntropy, Bf16MatchesCpu) {
  ErrorLog f("cross-entropy fwd bf16 (lse, loss)"), b("cross-entropy bwd bf16");
  check_cross_entropy<__nv_bfloat16>(f, b);
}

// AdamW: master weights and moments are float in both cases, only the gradient's type changes,
// so the update is held to the fp32 tolerance either way; the bf16 weight copy to bf16's.
template <class G> void check_adamw(ErrorLog& log, ErrorLog& copy_log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 600;
  for (int64_t n : {1, 31, 1000, 4099}) {
    // Weights of an initialised model's size (0.05): the float rounding of the stored weight,
    // relative to the step, then stays below the tolerance the step is held to.
    const Vec p0 = random<float>(n, ++seed, 0.05), g = random<G>(n, ++seed), m0 = random<float>(n, ++seed, 0.1);
    Vec v0 = random<float>(n, ++seed, 0.1);
    for (double& x : v0) x = double(float(x * x));
    AdamWArgs args;
    args.lr = 0.05, args.beta1 = 0.9, args.beta2 = 0.95, args.eps = 1e-8, args.weight_decay = 0.1;
    args.grad_scale = 0.7, args.step = 3;
    Tensor tp = tensor(*cpu, {n}, p0), tm = tensor(*cpu, {n}, m0), tv = tensor(*cpu, {n}, v0);
    cpu->adamw_update(tp, tensor(*cpu, {n}, g), tm, tv, args);

    auto gp = device<float>(p0), gm = device<float>(m0), gv = device<float>(v0);
    auto gg = device<G>(g);
    auto copy = poisoned<__nv_bfloat16>(n);
    const AdamWParams a = AdamWParams::make(args.lr, args.beta1, args.beta2, args.eps, args.weight_decay,
                                            args.grad_scale, args.step);
    adamw_update<G>(gp.get(), gg.get(), gm.get(), gv.get(), copy.get(), n, a, nullptr);
    // The weights move by ~lr: compare the step itself, which the weights' size would hide.
    Vec step = fetch(gp), want = host(*cpu, tp);
    for (int64_t i = 0; i < n; ++i) step[i] -= p0[i], want[i] -= p0[i];
    const double e = std::max({max_err(step, want), max_err(fetch(gm), host(*cpu, tm)), max_err(fetch(gv), host(*cpu, tv))});
    log.add(e);
    EXPECT_LT(e, 1e-5) << n;
    const double ec = max_err(fetch(copy), host(*cpu, tp));
    copy_log.add(ec);
    EXPECT_LT(ec, 1e-2) << n;
  }
}

class CudaAdamW : public KernelTest {};
TEST_F(CudaAdamW, Fp32GradsMatchCpu) {
  ErrorLog e("adamw fp32 grads (step, m, v)"), c("adamw bf16 weight copy");
  check_adamw<float>(e, c);
}
TEST_F(CudaAdamW, Bf16GradsMatchCpu) {
  ErrorLog e("adamw bf16 grads (step, m, v)"), c("adamw bf16 weight copy (bf16 grads)");
  check_adamw<__nv_bfloat16>(e, c);
}

template <class T> void check_sum_squares(ErrorLog& log) {
  auto cpu = make_cpu_backend();
  DeviceBuffer<double> scratch(sum_squares_scratch());
  for (int64_t n : {0, 1, 33, 1000, 70001}) {
    const Vec x = random<T>(n, 700 + n);
    const double want = cpu->sum_squares(tensor(*cpu, {n}, x));
    auto gx = device<T>(x);
    auto out = poisoned<double>(1);
    sum_squares<T>(gx.get(), n, out.get(), scratch.get(), nullptr);
    const double got = out.download()[0];
    const double e = n == 0 ? std::abs(got) : std::abs(got - want) / want;
    log.add(e);
    EXPECT_LT(e, 1e-12) << n;  // double accumulation of the same values: only the order differs
  }
}

class CudaSumSquares : public KernelTest {};
TEST_F(CudaSumSquares, Fp32MatchesCpu) {
  ErrorLog e("sum of squares fp32 (double accumulation)");
  check_sum_squares<float>(e);
}
TEST_F(CudaSumSquares, Bf16MatchesCpu) {
  ErrorLog e("sum of squares bf16 (double accumulation)");
  check_sum_squares<__nv_bfloat16>(e);
}

}  // namespace
}  // namespace sy::cuda::test
