// The cuBLASLt wrapper (see blas.h); the grouped GEMM is in grouped_gemm.cu, SY_CUBLAS_CHECK in
// blas_internal.h.
#include "engine/cuda/blas/blas_internal.h"

#include "engine/cuda/cuda_check.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

// Owns a matrix layout descriptor for the length of one call.
struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  Layout(GemmType t, int64_t rows, int64_t cols, int64_t ld) {
    SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&h, data_type(t), uint64_t(rows), uint64_t(cols), ld));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(h); }
};

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLASLt's faster algorithms ask for on Hopper

}  // namespace

Blas::Blas() : impl_(new Impl) {
  SY_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  SY_CUDA_CHECK(cudaMalloc(&impl_->workspace, kWorkspaceBytes));
}

Blas::~Blas() {
  destroy_grouped(impl_->grouped);
  cudaFree(impl_->workspace);
  cublasLtDestroy(impl_->handle);
  delete impl_;
}

void Blas::gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* a, int64_t lda,
                const void* b, int64_t ldb, float beta, void* c, int64_t ldc, GemmType ab, GemmType ct,
                cudaStream_t s) {
  if (m == 0 || n == 0) return;
  // Column-major view (blas.h): D^T [n x m] = op(B)^T [n x k] op(A)^T [k x m]. The stored B, read
  // column-major, is [tb ? k : n] x [tb ? n : k] with leading dimension ldb; likewise A.
  Layout la(ab, tb ? k : n, tb ? n : k, ldb);  // cuBLAS's A is our B
  Layout lb(ab, ta ? m : k, ta ? k : m, lda);  // cuBLAS's B is our A
  Layout lc(ct, n, m, ldc);
  cublasLtMatmulDesc_t desc = nullptr;
  SY_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  try {
    SY_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    SY_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    SY_CUBLAS_CHECK(cublasLtMatmul(impl_->handle, desc, &alpha, b, la.h, a, lb.h, &beta, c, lc.h, c, lc.h, nullptr,
                                   impl_->workspace, kWorkspaceBytes, s));
  } catch (...) {
    cublasLtMatmulDescDestroy(desc);
    throw;
  }
  cublasLtMatmulDescDestroy(desc);
}

SY_CUDA_NS_END
}  // namespace sy::cuda
