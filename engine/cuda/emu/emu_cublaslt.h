// The subset of cuBLASLt the project calls, for the host emulator: handles, matmul and matrix
// layout descriptors, and cublasLtMatmul computed on the host from the library's documented
// semantics: D = alpha op(A) op(B) + beta C on column-major matrices (element (i, j) of a matrix
// with leading dimension ld at i + j * ld), op = transpose when TRANSA / TRANSB say so, C not read
// when beta is 0, fp32 accumulation (CUBLAS_COMPUTE_32F). It returns CUBLAS_STATUS_INVALID_VALUE
// for what the library rejects (layouts that disagree with op(A) op(B) = D, a leading dimension
// below the rows), so the arguments the engine passes are checked in CI too.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/cuda/emu/emu_runtime.h"

enum cublasStatus_t : int {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
};

enum cublasOperation_t : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasComputeType_t : int { CUBLAS_COMPUTE_32F = 68 };
enum cudaDataType_t : int { CUDA_R_32F = 0, CUDA_R_16BF = 14 };

namespace syemu {
// Element i of a float32 or bf16 matrix, as float, and back (round to nearest even): the emulated
// BLAS libraries' (cuBLASLt's, cuBLAS's) one way to read and write their operands.
float blas_load(const void* p, cudaDataType_t t, int64_t i);
void blas_store(void* p, cudaDataType_t t, int64_t i, float v);
// D = al op(A) op(B) + be C, column-major with leading dimensions, every operand float32 or bf16,
// accumulated in float (CUBLAS_COMPUTE_32F): the one compute path of both emulated libraries.
// The operands are read through their layouts into dense float copies whose product goes to
// oneDNN's sgemm (the CPU backend's GEMM), so that whole-model runs under the emulator take
// seconds, not minutes. Arguments are checked by the callers. False only if oneDNN refuses.
bool blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float al, const void* A, cudaDataType_t at,
               int64_t lda, const void* B, cudaDataType_t bt, int64_t ldb, float be, const void* C,
               cudaDataType_t ct, int64_t ldc, void* D, cudaDataType_t dt, int64_t ldd);
}  // namespace syemu
enum cublasLtMatmulDescAttributes_t : int { CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4 };

struct cublasLtContext;
using cublasLtHandle_t = cublasLtContext*;
struct cublasLtMatmulDescOpaque_t;
using cublasLtMatmulDesc_t = cublasLtMatmulDescOpaque_t*;
struct cublasLtMatrixLayoutOpaque_t;
using cublasLtMatrixLayout_t = cublasLtMatrixLayoutOpaque_t*;
struct cublasLtMatmulAlgo_t;

const char* cublasLtGetStatusString(cublasStatus_t status);

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream);
