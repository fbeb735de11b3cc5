// Blas::grouped_gemm (engine/cuda/blas/grouped_gemm.cu) against the CPU backend's gemm in float64,
// one reference GEMM per group, on the four shapes of the MoE experts' GEMMs (engine/backend.h's
// grouped_swiglu): row counts per group with 0 and odd sizes, two equal neighbours (one cuBLAS
// group of two), more groups than the pointer buffer first holds; beta 0 over NaN-poisoned C,
// beta 1 (the backward's accumulation) and 0.5. Leading dimensions exceed the rows, and every
// operand is its own allocation of exactly the extent its leading dimension implies, padded with
// NaN (A, B) or a sentinel (C): under the emulator a wrong ld or transpose reads NaN, runs past an
// allocation (CUBLAS_STATUS_INVALID_VALUE) or overwrites the sentinel.
//
// Error measure: |error| / max(|want|, sqrt(k + 1)). The denominator's second term is the CPU GEMM
// test's normalisation (float accumulation error grows with the inner dimension; inputs are of unit
// scale, so sqrt(k + 1) is the size of a typical element); the first makes it relative where an
// element is larger than that, as a bf16 C's rounding is (2^-9 of the value). Bounds 1e-5 (fp32)
// and 1e-2 (bf16 on either side).
#include <cmath>
#include <cstdio>

#include "engine/cuda/blas/blas.h"
#include "tests/cuda/kernel_test_util.h"

#if SY_CUDA_EMULATED
#include "engine/cuda/emu/emu_cublas.h"
#endif

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

template <class T> constexpr GemmType gemm_type() { return std::is_same_v<T, float> ? GemmType::F32 : GemmType::BF16; }

// A row-major rows x cols matrix with leading dimension ld in an allocation of exactly
// (rows - 1) * ld + cols elements; `pad` fills the elements between rows.
template <class T> struct Padded {
  int64_t rows, cols, ld;
  DeviceBuffer<T> buf;
  static int64_t extent(int64_t rows, int64_t cols, int64_t ld) { return rows && cols ? (rows - 1) * ld + cols : 0; }
  Padded(const Vec& dense, int64_t r, int64_t c, int64_t l, double pad) : rows(r), cols(c), ld(l) {
    Vec v(size_t(extent(r, c, l)), pad);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) v[size_t(i * l + j)] = dense[size_t(i * c + j)];
    buf = device<T>(v);
  }
};

struct Shape3 {
  int64_t m, n, k;
};

// One call: groups of the given sizes, everything checked against the CPU backend.
template <class AB, class CT>
double check_call(bool ta, bool tb, const std::vector<Shape3>& sizes, float beta, uint64_t& seed, cudaStream_t s,
                  Blas& blas) {
  auto cpu = make_cpu_backend();
  const float alpha = 0.7f;
  const double sentinel = -768.0;  // exact in bf16
  int64_t lda = 1, ldb = 1, ldc = 1;
  for (const Shape3& g : sizes) {
    lda = std::max(lda, ta ? g.m : g.k);
    ldb = std::max(ldb, tb ? g.k : g.n);
    ldc = std::max(ldc, g.n);
  }
  lda += 3, ldb += 1, ldc += 2;
  std::vector<Padded<AB>> as, bs;
  std::vector<Padded<CT>> cs;
  std::vector<Vec> wants;
  std::vector<GemmGroup> groups;
  for (const Shape3& g : sizes) {
    const int64_t ar = ta ? g.k : g.m, ac = ta ? g.m : g.k, br = tb ? g.n : g.k, bc = tb ? g.k : g.n;
    const Vec a = random<AB>(ar * ac, ++seed), b = random<AB>(br * bc, ++seed), c0 = random<CT>(g.m * g.n, ++seed);
    as.emplace_back(a, ar, ac, lda, NAN);
    bs.emplace_back(b, br, bc, ldb, NAN);
    Vec c_start = c0;
    if (beta == 0) std::fill(c_start.begin(), c_start.end(), NAN);  // beta 0 must overwrite, not scale
    cs.emplace_back(c_start, g.m, g.n, ldc, sentinel);
    Tensor C = tensor(*cpu, {g.m, g.n}, c0);
    cpu->gemm(tensor(*cpu, {ar, ac}, a), ta, tensor(*cpu, {br, bc}, b), tb, C, alpha, beta);
    wants.push_back(host(*cpu, C));
    groups.push_back({g.m, g.n, g.k, as.back().buf.get(), bs.back().buf.get(), cs.back().buf.get()});
  }
  blas.grouped_gemm(ta, tb, groups, alpha, lda, ldb, beta, ldc, gemm_type<AB>(), gemm_type<CT>(), s);
  SY_CUDA_CHECK(cudaStreamSynchronize(s));
  double worst = 0;
  for (size_t g = 0; g < sizes.size(); ++g) {
    const Vec got = fetch(cs[g].buf);
    const int64_t m = sizes[g].m, n = sizes[g].n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < (i + 1 < m ? ldc : n); ++j) {
        const double v = got[size_t(i * ldc + j)];
        if (j >= n) {  // padding: never written
          EXPECT_EQ(v, sentinel) << "group " << g << " wrote padding at row " << i << " column " << j;
          continue;
        }
        const double want = wants[g][size_t(i * n + j)];
        const double e = std::isfinite(v) ? std::abs(v - want) / std::max(std::abs(want), std::sqrt(sizes[g].k + 1.0))
                                           : INFINITY;
        worst = std::max(worst, e);
      }
  }
  return worst;
}

// The row counts of the experts, per case: one expert; empty and odd groups; equal neighbours; all
// empty; 70 experts (more than the pointer buffer's first size).
std::vector<std::vector<int64_t>> row_cases() {
  std::vector<std::vector<int64_t>> cases = {{5}, {0, 7, 1}, {3, 0, 0, 17, 1, 0, 9, 2}, {4, 4, 0, 4, 6}, {0, 0, 0}};
  std::vector<int64_t> many(70);
  for (size_t i = 0; i < many.size(); ++i) many[i] = int64_t(i * 7 % 4);
  cases.push_back(many);
  return cases;
}

template <class AB, class CT> void check_all(const char* name) {
  Blas blas;
  cudaStream_t other = nullptr;
  SY_CUDA_CHECK(cudaStreamCreate(&other));
  ErrorLog log(std::string("grouped gemm ") + name + " (err / max(|c|, sqrt(k+1)))");
  const double bound = std::is_same_v<AB, float> && std::is_same_v<CT, float> ? 1e-5 : 1e-2;
  // The MoE GEMMs (grouped_swiglu; d, f the model's widths, m_e an expert's rows):
  //   rows vary: h13 = x w13^T (ta 0, tb 1), y = a w2 and dx += dh13 w13 (0, 0), da = dy w2^T (0, 1);
  //   k varies:  dw2 += a^T dy, dw13 += dh13^T x (1, 0). (1, 1) for completeness.
  struct Pattern {
    bool ta, tb, vary_k;
  };
  const Pattern patterns[] = {{false, true, false}, {false, false, false}, {true, false, true}, {true, true, false}};
  const int64_t other_dims[][2] = {{13, 9}, {1, 33}, {40, 2}};
  uint64_t seed = 7100;
  int call = 0;
  for (const Pattern& p : patterns)
    for (const auto& rows : row_cases())
      for (const auto& od : other_dims)
        for (float beta : {0.0f, 1.0f, 0.5f}) {
          if (rows.size() > 8 && (od[0] != 13 || beta == 0.5f)) continue;  // keep the 70-group case short
          std::vector<Shape3> sizes;
          for (int64_t r : rows) sizes.push_back(p.vary_k ? Shape3{od[0], od[1], r} : Shape3{r, od[0], od[1]});
          cudaStream_t s = (++call % 3 == 0) ? other : nullptr;  // a change of stream now and then
          const double e = check_call<AB, CT>(p.ta, p.tb, sizes, beta, seed, s, blas);
          log.add(e);
          EXPECT_LT(e, bound) << name << " ta " << p.ta << " tb " << p.tb << (p.vary_k ? " k" : " m") << " varies, "
                              << rows.size() << " groups, dims " << od[0] << "," << od[1] << " beta " << beta;
        }
  std::printf("[ cuda info] grouped gemm %s: %s\n", name,
              blas.grouped_native(gemm_type<AB>(), gemm_type<CT>()) ? "one cublasGemmGroupedBatchedEx per call"
                                                                    : "cuBLAS refused the types: a cuBLASLt GEMM per group");
  SY_CUDA_CHECK(cudaStreamDestroy(other));
}

class CudaGroupedGemm : public KernelTest {};

TEST_F(CudaGroupedGemm, Fp32MatchesCpu) { check_all<float, float>("fp32"); }
TEST_F(CudaGroupedGemm, Bf16MatchesCpu) { check_all<__nv_bfloat16, __nv_bfloat16>("bf16"); }
TEST_F(CudaGroupedGemm, Bf16InputsFp32OutputMatchesCpu) { check_all<__nv_bfloat16, float>("bf16 -> fp32 C"); }

TEST_F(CudaGroupedGemm, RefusesBadArguments) {
  Blas blas;
  DeviceBuffer<float> a(64), b(64), c(64);
  const GemmGroup ok{4, 3, 5, a.get(), b.get(), c.get()};
  auto call = [&](GemmGroup g, int64_t lda, int64_t ldb, int64_t ldc, GemmType ab, GemmType ct) {
    const GemmGroup gs[] = {ok, g};
    blas.grouped_gemm(false, false, gs, 1.0f, lda, ldb, 0.0f, ldc, ab, ct, nullptr);
  };
  EXPECT_NO_THROW(call(ok, 5, 3, 3, GemmType::F32, GemmType::F32));
  EXPECT_THROW(call(ok, 4, 3, 3, GemmType::F32, GemmType::F32), std::invalid_argument);  // lda < k
  EXPECT_THROW(call(ok, 5, 2, 3, GemmType::F32, GemmType::F32), std::invalid_argument);  // ldb < n
  EXPECT_THROW(call(ok, 5, 3, 2, GemmType::F32, GemmType::F32), std::invalid_argument);  // ldc < n
  EXPECT_THROW(call({-1, 3, 5, a.get(), b.get(), c.get()}, 5, 3, 3, GemmType::F32, GemmType::F32),
               std::invalid_argument);
  EXPECT_THROW(call(ok, 5, 3, 3, GemmType::F32, GemmType::BF16), std::invalid_argument);
  EXPECT_NO_THROW(call({0, 3, 5, nullptr, nullptr, nullptr}, 5, 3, 3, GemmType::F32, GemmType::F32));  // empty
}

#if SY_CUDA_EMULATED
// The emulated library itself refuses what the wrapper must never pass.
TEST_F(CudaGroupedGemm, EmulatedCublasChecksPointersAndTypes) {
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  DeviceBuffer<float> a(6), b(6), c(4);  // A 2x3, B 3x2, C 2x2 column-major
  std::vector<const void*> host_a = {a.get()}, host_b = {b.get()};
  std::vector<void*> host_c = {c.get()};
  DeviceBuffer<const void*> dev_a(host_a), dev_b(host_b);
  DeviceBuffer<void*> dev_c(host_c);
  const cublasOperation_t n_op = CUBLAS_OP_N;
  const int two = 2, three = 3, one = 1;
  const float alpha = 1, beta = 0;
  auto run = [&](const void* const* pa, int lda, cudaDataType_t tc, void* const* pc) {
    return cublasGemmGroupedBatchedEx(h, &n_op, &n_op, &two, &two, &three, &alpha, pa, CUDA_R_32F, &lda,
                                      dev_b.get(), CUDA_R_32F, &three, &beta, pc, tc, &two, 1, &one, CUBLAS_COMPUTE_32F);
  };
  EXPECT_EQ(run(dev_a.get(), 2, CUDA_R_32F, dev_c.get()), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(run(host_a.data(), 2, CUDA_R_32F, dev_c.get()), CUBLAS_STATUS_INVALID_VALUE);  // host pointer array
  EXPECT_EQ(run(dev_a.get(), 1, CUDA_R_32F, dev_c.get()), CUBLAS_STATUS_INVALID_VALUE);    // lda below the rows
  EXPECT_EQ(run(dev_a.get(), 3, CUDA_R_32F, dev_c.get()), CUBLAS_STATUS_INVALID_VALUE);    // A runs past its buffer
  EXPECT_EQ(run(dev_a.get(), 2, CUDA_R_16BF, dev_c.get()), CUBLAS_STATUS_NOT_SUPPORTED);   // types differ
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
}
#endif

}  // namespace
}  // namespace sy::cuda::test
