// The cuBLASLt wrapper (see blas.h) and SY_CUBLAS_CHECK, the one cuBLAS return-code check.
#include "engine/cuda/blas/blas.h"

#include <stdexcept>
#include <string>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernels.h"

#if SY_CUDA_EMULATED
#include "engine/cuda/emu/emu_cublaslt.h"
#else
#include <cublasLt.h>
#endif

#define SY_CUBLAS_CHECK(call) ::sy::cuda::cublas_check((call), #call, __FILE__, __LINE__)

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

void cublas_check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                           cublasLtGetStatusString(s));
}

cudaDataType_t data_type(GemmType t) { return t == GemmType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

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

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

Blas::Blas() : impl_(new Impl) {
  SY_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  SY_CUDA_CHECK(cudaMalloc(&impl_->workspace, kWorkspaceBytes));
}

Blas::~Blas() {
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
