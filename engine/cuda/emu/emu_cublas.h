// The subset of cuBLAS (cublas_v2.h) the project calls, for the host emulator: a handle bound to a
// stream, and cublasGemmGroupedBatchedEx computed on the host from the library's documented
// semantics. Groups i = 0 .. group_count-1 each hold group_size[i] problems that share transa, transb,
// m, n, k, lda, ldb, ldc, alpha and beta (the size arrays and the scalars are host arrays with one
// entry per group); problem p (numbered across the groups) computes
//   C[p] = alpha op(A[p]) op(B[p]) + beta C[p]   (column-major, element (i, j) at i + j * ld),
// op(A) m x k, op(B) k x n, C m x n, fp32 accumulation, C not read when beta is 0; an m or n of 0
// computes nothing, a k of 0 gives C = beta C. Aarray, Barray and Carray are DEVICE arrays of
// device pointers.
//
// What the library refuses is refused here, and a little more, so the arguments the engine
// passes are checked in CI:
//   CUBLAS_STATUS_INVALID_VALUE  negative counts or sizes, an operation other than N/T, a leading
//                                dimension below max(1, rows of the stored matrix), a null array;
//                                here also pointer arrays that are not device memory and a matrix
//                                that does not lie inside one cudaMalloc allocation (a host pointer,
//                                or one whose leading dimension runs past the buffer's end);
//   CUBLAS_STATUS_NOT_SUPPORTED  types outside the documented table: compute CUBLAS_COMPUTE_32F with
//                                Atype = Btype = Ctype, both CUDA_R_32F or both CUDA_R_16BF. The
//                                table has no bf16 inputs with an fp32 C (cublasGemmEx has).
#pragma once

#include <cstdint>

#include "engine/cuda/emu/emu_cublaslt.h"

struct cublasContext;
using cublasHandle_t = cublasContext*;

const char* cublasGetStatusString(cublasStatus_t status);
cublasStatus_t cublasCreate(cublasHandle_t* handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);

cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void* alpha_array,
                                          const void* const Aarray[], cudaDataType_t Atype, const int lda_array[],
                                          const void* const Barray[], cudaDataType_t Btype, const int ldb_array[],
                                          const void* beta_array, void* const Carray[], cudaDataType_t Ctype,
                                          const int ldc_array[], int group_count, const int group_size[],
                                          cublasComputeType_t computeType);
