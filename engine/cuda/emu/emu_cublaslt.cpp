// cuBLASLt on the host (see emu_cublaslt.h), from the documented column-major semantics.
#include "engine/cuda/emu/emu_cublaslt.h"

#include <cstring>
#include <vector>

#include <dnnl.h>

#include "engine/cuda/emu/emu_bf16.h"

struct cublasLtContext {
  int unused;
};
struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

namespace {

bool valid_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

}  // namespace

const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasLtContext{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (!desc || compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_INVALID_VALUE;
  *desc = new cublasLtMatmulDescOpaque_t{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  // The library takes the operation as an int32_t (cublasOperation_t) attribute.
  if (!desc || !buf || bytes != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
  int32_t op;
  std::memcpy(&op, buf, sizeof op);
  if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA) desc->ta = cublasOperation_t(op);
  else if (attr == CUBLASLT_MATMUL_DESC_TRANSB) desc->tb = cublasOperation_t(op);
  else return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!layout || !valid_type(type) || ld < int64_t(rows) || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) {
  if (!handle || !desc || !Adesc || !Bdesc || !Cdesc || !Ddesc || !alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = desc->ta == CUBLAS_OP_T, tb = desc->tb == CUBLAS_OP_T;
  const int64_t m = int64_t(Ddesc->rows), n = int64_t(Ddesc->cols);
  const int64_t k = int64_t(ta ? Adesc->rows : Adesc->cols);
  // op(A) is m x k, op(B) is k x n, C and D are m x n.
  const bool shapes_ok = int64_t(ta ? Adesc->cols : Adesc->rows) == m && int64_t(tb ? Bdesc->cols : Bdesc->rows) == k &&
                         int64_t(tb ? Bdesc->rows : Bdesc->cols) == n && Cdesc->rows == Ddesc->rows &&
                         Cdesc->cols == Ddesc->cols && Cdesc->type == Ddesc->type;
  if (!shapes_ok) return CUBLAS_STATUS_INVALID_VALUE;
  if (m * n * k > 0 && (!A || !B || !D)) return CUBLAS_STATUS_INVALID_VALUE;
  float al, be;
  std::memcpy(&al, alpha, sizeof al);
  std::memcpy(&be, beta, sizeof be);
  return syemu::blas_gemm(ta, tb, m, n, k, al, A, Adesc->type, Adesc->ld, B, Bdesc->type, Bdesc->ld, be, C, Cdesc->type,
                          Cdesc->ld, D, Ddesc->type, Ddesc->ld)
             ? CUBLAS_STATUS_SUCCESS
             : CUBLAS_STATUS_NOT_SUPPORTED;  // oneDNN refused the shapes (never for valid ones)
}

namespace syemu {
float blas_load(const void* p, cudaDataType_t t, int64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  return bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
}
void blas_store(void* p, cudaDataType_t t, int64_t i, float v) {
  if (t == CUDA_R_32F) static_cast<float*>(p)[i] = v;
  else static_cast<uint16_t*>(p)[i] = f32_to_bf16_bits(v);
}

bool blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float al, const void* A, cudaDataType_t at,
               int64_t lda, const void* B, cudaDataType_t bt, int64_t ldb, float be, const void* C,
               cudaDataType_t ct, int64_t ldc, void* D, cudaDataType_t dt, int64_t ldd) {
  if (m == 0 || n == 0) return true;
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), acc(size_t(m * n), 0.0f);
  for (int64_t i = 0; i < m; ++i)  // op(A), row-major m x k
    for (int64_t p = 0; p < k; ++p) a[size_t(i * k + p)] = blas_load(A, at, ta ? p + i * lda : i + p * lda);
  for (int64_t p = 0; p < k; ++p)  // op(B), row-major k x n
    for (int64_t j = 0; j < n; ++j) b[size_t(p * n + j)] = blas_load(B, bt, tb ? j + p * ldb : p + j * ldb);
  if (k > 0 && dnnl_sgemm('N', 'N', m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, acc.data(), n) != dnnl_success)
    return false;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      const float c = be == 0.0f ? 0.0f : be * blas_load(C, ct, i + j * ldc);
      blas_store(D, dt, i + j * ldd, al * acc[size_t(i * n + j)] + c);
    }
  return true;
}
}  // namespace syemu
