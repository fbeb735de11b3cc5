// Router and z-loss kernels (float, as the router always runs) against the CPU backend in float64.
#include <cmath>

#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

// Logits on a 1/8 grid: exact ties are common (they exercise the lower-index rule, and equal
// logits give equal scores in float and double alike), and distinct logits differ by enough that
// float rounding cannot reorder them. The bias takes values 0, 0.5 and 1 for the same reason.
Vec grid_logits(int64_t n, uint64_t seed) {
  Vec v = optest::randn(n, seed, 2.0);
  for (double& x : v) x = std::round(x * 8) / 8;
  return v;
}

struct RouterCase {
  int64_t n, e;
  int k;
  bool sigmoid, norm, bias, aux;
  RouterGroups grp = {};
};

class CudaRouter : public KernelTest {};

TEST_F(CudaRouter, ForwardBackwardMatchCpu) {
  ErrorLog fwd("router fwd (scores, weights)"), bwd("router bwd"), ties("router top-k index mismatches");
  auto cpu = make_cpu_backend();
  uint64_t seed = 800;
  // Single expert, k = E, more rows than a block (128), softmax and sigmoid, with and without
  // bias, normalisation and the aux-loss term.
  const RouterCase cases[] = {{1, 1, 1, false, true, false, false},   {5, 8, 2, false, true, true, true},
                              {37, 64, 6, true, true, true, true},     {130, 16, 4, false, false, false, true},
                              {3, 33, 33, true, false, true, false},  {129, 7, 2, true, true, false, false},
                              // group-limited (DeepSeek-V3 style): 8 groups of 8, top 4; 3 of 1 expert each
                              {133, 64, 8, true, true, true, true, {8, 4}}, {9, 3, 2, false, true, true, false, {3, 2}},
                              {40, 32, 4, true, false, false, true, {16, 3}}};
  for (const RouterCase& c : cases) {
    const int64_t n = c.n, e = c.e;
    const int k = c.k;
    const Vec logits = grid_logits(n * e, ++seed), dw = random<float>(n * k, ++seed), d0 = random<float>(n * e, ++seed);
    Vec bias(static_cast<size_t>(e)), aux = random<float>(e, ++seed);
    for (int64_t x = 0; x < e; ++x) bias[x] = 0.5 * double((x * 7) % 3);
    const ScoreFn fn = c.sigmoid ? ScoreFn::Sigmoid : ScoreFn::Softmax;
    Tensor tl = tensor(*cpu, {n, e}, logits), tb = c.bias ? tensor(*cpu, {e}, bias) : Tensor();
    Tensor scores = cpu->empty({n, e}, DType::F64), idx = cpu->empty({n, k}, DType::I32), w = cpu->empty({n, k}, DType::F64);
    cpu->router_forward(tl, tb, fn, k, c.norm, scores, idx, w, c.grp);

    auto gl = device<float>(logits), gb = device<float>(bias), gaux = device<float>(aux);
    auto gs = poisoned<float>(n * e), gw = poisoned<float>(n * k);
    DeviceBuffer<int32_t> gi(std::vector<int32_t>(size_t(n * k), -7));
    router_forward(gl.get(), c.bias ? gb.get() : nullptr, c.sigmoid, k, c.norm, gs.get(), gi.get(), gw.get(), n, e,
                   nullptr, c.grp.groups, c.grp.top_groups);
    const std::vector<int32_t> got_idx = gi.download();
    std::vector<int32_t> want_idx(static_cast<size_t>(n * k));
    cpu->download(idx, want_idx.data());
    int mismatches = 0;
    for (size_t i = 0; i < want_idx.size(); ++i) mismatches += got_idx[i] != want_idx[i];
    ties.add(mismatches);
    EXPECT_EQ(mismatches, 0) << "n " << n << " e " << e << " k " << k;
    const double ef = std::max(max_err(fetch(gs), host(*cpu, scores)), max_err(fetch(gw), host(*cpu, w)));
    fwd.add(ef);
    EXPECT_LT(ef, 1e-5) << "n " << n << " e " << e << " k " << k;

    Tensor dl = tensor(*cpu, {n, e}, d0);
    cpu->router_backward(tensor(*cpu, {n, k}, dw), c.aux ? tensor(*cpu, {e}, aux) : Tensor(), tl, scores, idx, fn,
                         c.norm, dl);
    auto gdw = device<float>(dw), gd = device<float>(d0);
    router_backward(gdw.get(), c.aux ? gaux.get() : nullptr, gs.get(), gi.get(), c.sigmoid, c.norm, gd.get(), n, e, k,
                    nullptr);
    const double eb = max_err(fetch(gd), host(*cpu, dl));
    bwd.add(eb);
    EXPECT_LT(eb, 1e-5) << "n " << n << " e " << e << " k " << k;
  }
}

TEST_F(CudaRouter, TiesGoToTheLowerExpert) {
  const int64_t e = 6;
  const int k = 3;
  auto gl = device<float>(Vec(e, 0.25)), gs = poisoned<float>(e), gw = poisoned<float>(k);
  DeviceBuffer<int32_t> gi{size_t(k)};
  router_forward(gl.get(), nullptr, false, k, false, gs.get(), gi.get(), gw.get(), 1, e, nullptr);
  EXPECT_EQ(gi.download(), (std::vector<int32_t>{0, 1, 2}));
  for (double x : fetch(gw)) EXPECT_NEAR(x, 1.0 / 6, 1e-7);
}

TEST_F(CudaRouter, ZLossMatchesCpu) {
  ErrorLog log("router z-loss fwd+bwd");
  auto cpu = make_cpu_backend();
  for (auto [n, e] : {std::pair<int64_t, int64_t>{1, 1}, {9, 8}, {200, 33}}) {
    const Vec logits = random<float>(n * e, 900 + n, 2.0), d0 = random<float>(n * e, 950 + n);
    Tensor tl = tensor(*cpu, {n, e}, logits);
    const double want = cpu->zloss_forward(tl);
    auto gl = device<float>(logits);
    auto rows = poisoned<float>(n);
    zloss_forward(gl.get(), rows.get(), n, e, nullptr);
    double got = 0;
    for (double r : fetch(rows)) got += r;
    Tensor dl = tensor(*cpu, {n, e}, d0);
    cpu->zloss_backward(tl, 0.3, dl);
    auto gd = device<float>(d0);
    zloss_backward(gl.get(), 0.3f, gd.get(), n, e, nullptr);
    const double err = std::max(std::abs(got - want) / want, max_err(fetch(gd), host(*cpu, dl)));
    log.add(err);
    EXPECT_LT(err, 1e-5) << n << "x" << e;
  }
}

}  // namespace
}  // namespace sy::cuda::test
