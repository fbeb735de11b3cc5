// CudaBackend on the emulator against the CPU backend: GEMM through the cuBLASLt wrapper (the
// emulated library computes from cuBLAS's column-major definition, so the row-major <-> column-
// major mapping is what is under test), and the whole model: the tiny recipe's losses and every
// gradient of a forward-backward step, then three AdamW steps, all in float32.
#include <cmath>

#include "config/recipe.h"
#include "engine/cuda/backend/cuda_backend.h"
#include "engine/host_io.h"
#include "engine/model.h"
#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

Tensor on(Backend& be, const Shape& s, const Vec& v, DType dt = DType::F32) {
  Tensor t = be.empty(s, dt);
  upload_f64(be, v, t);
  return t;
}

class CudaBackendTest : public KernelTest {};

TEST_F(CudaBackendTest, GemmAllTransposesMatchCpu) {
  auto cpu = make_cpu_backend();
  auto gpu = make_backend();
  // The CPU GEMM test's measure: |error| / sqrt(k + 1), since float accumulation error grows with
  // the inner dimension (cuBLAS and the emulated library both accumulate in float).
  ErrorLog log("gemm via cuBLASLt wrapper fp32 (abs err / sqrt(k+1))");
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {5, 130, 2}, {40, 3, 0}};
  uint64_t seed = 1500;
  for (auto& s : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (double beta : {0.0, 0.3}) {
          const int64_t m = s[0], n = s[1], k = s[2];
          const Vec a = random<float>(m * k, ++seed), b = random<float>(k * n, ++seed), c = random<float>(m * n, ++seed);
          const Shape as = ta ? Shape{k, m} : Shape{m, k}, bs = tb ? Shape{n, k} : Shape{k, n};
          Tensor C = tensor(*cpu, {m, n}, c);
          cpu->gemm(tensor(*cpu, as, a), ta, tensor(*cpu, bs, b), tb, C, 0.7, beta);
          Tensor G = on(*gpu, {m, n}, c);
          if (beta == 0) gpu->fill(G, std::nan(""));  // beta 0 must overwrite, not scale
          gpu->gemm(on(*gpu, as, a), ta, on(*gpu, bs, b), tb, G, 0.7, beta);
          const Vec got = download_f64(*gpu, G), want = host(*cpu, C);
          double e = 0;
          for (size_t i = 0; i < got.size(); ++i)
            e = std::max(e, std::isfinite(got[i]) ? std::abs(got[i] - want[i]) / std::sqrt(double(k) + 1) : INFINITY);
          log.add(e);
          EXPECT_LT(e, 2e-6) << m << "x" << n << "x" << k << " ta " << ta << " tb " << tb << " beta " << beta;
        }
  EXPECT_THROW(gpu->gemm(gpu->empty({3, 4}, DType::F32), false, gpu->empty({5, 4}, DType::F32), false,
                         gpu->empty({3, 5}, DType::F32), 1, 0),
               std::invalid_argument);
  EXPECT_THROW(gpu->gemm(cpu->empty({3, 4}, DType::F32), false, gpu->empty({4, 5}, DType::F32), false,
                         gpu->empty({3, 5}, DType::F32), 1, 0),
               std::invalid_argument);  // a host tensor
}

TEST_F(CudaBackendTest, MemoryOpsAndReductions) {
  auto gpu = make_backend();
  const Vec x = random<float>(1001, 1), y = random<float>(1001, 2);
  Tensor tx = on(*gpu, {1001}, x), ty = on(*gpu, {1001}, y);
  gpu->axpy(-0.5, tx, ty);
  gpu->scale(ty, 3.0);
  Vec want(1001);
  double ss = 0;
  for (size_t i = 0; i < want.size(); ++i) want[i] = 3 * (y[i] - 0.5 * x[i]), ss += x[i] * x[i];
  EXPECT_LT(max_err(download_f64(*gpu, ty), want), 1e-6);
  EXPECT_NEAR(gpu->sum_squares(tx), ss, 1e-12 * ss);
  EXPECT_TRUE(gpu->all_finite(tx));
  Vec bad = x;
  bad[999] = INFINITY;
  EXPECT_FALSE(gpu->all_finite(on(*gpu, {1001}, bad)));
  Tensor d = gpu->empty({1001}, DType::F64);
  gpu->convert(tx, d);
  EXPECT_EQ(download_f64(*gpu, d), x);
  Tensor z = gpu->zeros({3, 4}, DType::I32);
  for (double v : download_f64(*gpu, z)) EXPECT_EQ(v, 0);
  EXPECT_THROW(gpu->axpy(1, tx, d), std::invalid_argument);  // float64 does not compute here
}

// The tiny recipe's model (its [model] section; a short sequence keeps the emulated GEMMs quick).
ModelConfig tiny_recipe_model(double capacity_factor) {
  Recipe r = load_recipe(std::string(SY_SOURCE_DIR) + "/recipes/tiny-moe.toml",
                         {"model.seq_len=16", "model.capacity_factor=" + std::to_string(capacity_factor)});
  return r.model;
}

// ||a - b|| / ||b||: the gradient of a whole parameter against the reference. Elementwise, float
// rounding through a dozen layers leaves a few 1e-5 on the elements that cancel, in the CPU
// backend's own float32 against its float64 as much as here (both are printed).
double l2_rel(const Vec& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

HostBatch batch(const ModelConfig& c, int64_t b, uint64_t seed) {
  HostBatch h;
  h.batch = b, h.seq = c.seq_len;
  Philox rng(seed, 77);
  for (int64_t i = 0; i < b * c.seq_len; ++i) {
    h.inputs.push_back(int32_t(rng.below(c.vocab_size)));
    h.targets.push_back(int32_t(rng.below(c.vocab_size)));
  }
  return h;
}

void check_model(const ModelConfig& cfg, const char* what) {
  auto cpu = make_cpu_backend();
  auto gpu = make_backend();
  Model mc(cfg, *cpu, DType::F32, 7), mg(cfg, *gpu, DType::F32, 7);
  ASSERT_EQ(download_f64(*gpu, mg.params().values()), download_f64(*cpu, mc.params().values()));
  Tensor m1 = cpu->zeros({mc.params().values().numel()}, DType::F32), v1 = cpu->zeros({mc.params().values().numel()}, DType::F32);
  Tensor m2 = gpu->zeros({mg.params().values().numel()}, DType::F32), v2 = gpu->zeros({mg.params().values().numel()}, DType::F32);
  ErrorLog loss_log(std::string(what) + ": losses, steps 1-3"),
      grad_log(std::string(what) + ": gradients step 1 (L2 rel)"),
      elem_log(std::string(what) + ": gradients step 1 (elementwise)"),
      f64_log(std::string(what) + ": cpu fp32 vs fp64 grads (elementwise)"),
      weight_log(std::string(what) + ": weights after each AdamW step (elementwise)");
  // The CPU backend in float64 on the same weights, to show the size of float32's own rounding.
  Model m64(cfg, *cpu, DType::F64, 7);
  cpu->fill(m64.params().grads(), 0);
  m64.forward_backward(batch(cfg, 2, 101), 1.0);
  for (int64_t step = 1; step <= 3; ++step) {
    cpu->fill(mc.params().grads(), 0);
    gpu->fill(mg.params().grads(), 0);
    const HostBatch b = batch(cfg, 2, 100 + step);
    const LossParts lc = mc.forward_backward(b, 1.0), lg = mg.forward_backward(b, 1.0);
    for (auto [got, want] : {std::pair{lg.ce, lc.ce}, {lg.aux, lc.aux}, {lg.z, lc.z}}) {
      const double e = std::abs(got - want) / std::max(std::abs(want), 1e-12);
      loss_log.add(e);
      EXPECT_LT(e, 1e-5) << "step " << step << ": " << got << " vs " << want;
    }
    if (step == 1) {
      // Parameter by parameter, so a failure names the parameter.
      for (int id = 0; id < int(mc.params().infos().size()); ++id) {
        const Vec got = download_f64(*gpu, mg.params().grad(id)), want = download_f64(*cpu, mc.params().grad(id));
        const double e = l2_rel(got, want);
        grad_log.add(e);
        elem_log.add(max_err(got, want));
        f64_log.add(max_err(want, download_f64(*cpu, m64.params().grad(id))));
        EXPECT_LT(e, 1e-5) << mc.params().info(id).name;
      }
    }
    // Both updates start from the CPU's gradients: Adam moves a weight by about lr * sign(g), so a
    // gradient element at the float noise floor (which the two backends round differently) could
    // step either way and the runs would drift apart by ~lr, hiding what each step computes. With
    // the same gradients the updates agree to rounding and every step compares like with like.
    std::vector<float> g(size_t(mc.params().grads().numel()));
    cpu->download(mc.params().grads(), g.data());
    gpu->upload(g.data(), mg.params().grads());
    AdamWArgs a;
    a.lr = 1e-2, a.weight_decay = 0.1, a.step = step;
    cpu->adamw_update(mc.params().values(), mc.params().grads(), m1, v1, a);
    gpu->adamw_update(mg.params().values(), mg.params().grads(), m2, v2, a);
    const double ew = max_err(download_f64(*gpu, mg.params().values()), download_f64(*cpu, mc.params().values()));
    weight_log.add(ew);
    EXPECT_LT(ew, 1e-5) << "weights after step " << step;
  }
}

TEST_F(CudaBackendTest, TinyRecipeModelMatchesCpu) { check_model(tiny_recipe_model(0.0), "tiny-moe dropless"); }

// Capacity 0.5 drops assignments, and with 8 experts and few tokens some groups end up empty.
TEST_F(CudaBackendTest, TinyRecipeModelWithCapacityDropsMatchesCpu) {
  check_model(tiny_recipe_model(0.5), "tiny-moe capacity 0.5");
}

}  // namespace
}  // namespace sy::cuda::test
