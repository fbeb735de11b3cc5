// Dense GEMM: float32 through oneDNN's sgemm, float64 through a plain blocked loop (the float64
// path exists for gradient checks, where exactness matters and speed does not).
#include <algorithm>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {
namespace cpu {

namespace {

// C = beta * C, where beta == 0 must also clear NaN and inf left in C.
template <class T> void scale_c(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

}  // namespace

void gemm_raw(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_c(m, n, beta, c, ldc);
  SY_DNNL_CHECK(dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
}

void gemm_raw(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
              const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_c(m, n, beta, c, ldc);
  // op(B) as a contiguous [k, n] panel, so the innermost loop runs over unit stride in B and C.
  std::vector<double> packed;
  if (tb) {
    packed.resize(static_cast<size_t>(k * n));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) packed[p * n + j] = b[j * ldb + p];
    b = packed.data();
    ldb = n;
  }
  constexpr int64_t kRows = 4, kCols = 256;
  const int64_t row_blocks = (m + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && m * n * k > (1 << 16))
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    const int64_t i0 = rb * kRows, rows = std::min(kRows, m - i0);
    double acc[kRows][kCols];
    for (int64_t j0 = 0; j0 < n; j0 += kCols) {
      const int64_t cols = std::min(kCols, n - j0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) acc[r][j] = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double* brow = b + p * ldb + j0;
        for (int64_t r = 0; r < rows; ++r) {
          const double av = ta ? a[p * lda + i0 + r] : a[(i0 + r) * lda + p];
          for (int64_t j = 0; j < cols; ++j) acc[r][j] += av * brow[j];
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        double* crow = c + (i0 + r) * ldc + j0;
        for (int64_t j = 0; j < cols; ++j) crow[j] = alpha * acc[r][j] + (beta == 0 ? 0.0 : beta * crow[j]);
      }
    }
  }
}

}  // namespace cpu

using namespace cpu;

void CpuBackend::gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, const Tensor& C, double alpha,
                      double beta) {
  const char* op = "gemm";
  const DType dt = check_float(op, {{"A", A}, {"B", B}, {"C", C}});
  check_rank(op, {"A", A}, 2);
  check_rank(op, {"B", B}, 2);
  check_rank(op, {"C", C}, 2);
  const int64_t m = trans_a ? A.dim(1) : A.dim(0), k = trans_a ? A.dim(0) : A.dim(1);
  const int64_t kb = trans_b ? B.dim(1) : B.dim(0), n = trans_b ? B.dim(0) : B.dim(1);
  if (k != kb || C.dim(0) != m || C.dim(1) != n)
    fail(op, std::string("shape mismatch for C = op(A) op(B) with trans_a=") + (trans_a ? "1" : "0") +
                 ", trans_b=" + (trans_b ? "1" : "0") + ": " + describe({{"A", A}, {"B", B}, {"C", C}}));
  // Leading dimensions of at least 1 keep oneDNN's argument checks happy on empty operands.
  const int64_t lda = std::max<int64_t>(1, A.dim(1)), ldb = std::max<int64_t>(1, B.dim(1)),
                ldc = std::max<int64_t>(1, n);
  dispatch(dt, [&]<class T>(T) {
    gemm_raw(trans_a, trans_b, m, n, k, T(alpha), A.data<T>(), lda, B.data<T>(), ldb, T(beta), C.data<T>(), ldc);
  });
}

}  // namespace sy
