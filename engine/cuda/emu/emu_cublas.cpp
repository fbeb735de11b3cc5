// cuBLAS's grouped GEMM on the host (see emu_cublas.h): every argument checked first, as the
// library validates before it launches anything, then each problem through the emulated BLAS's one GEMM (syemu::blas_gemm).
#include "engine/cuda/emu/emu_cublas.h"

#include <cstring>

#include "engine/cuda/emu/emu_bf16.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

size_t elem_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

int64_t imax1(int64_t a) { return a > 1 ? a : 1; }

// A column-major rows x cols matrix with leading dimension ld must lie inside one allocation: its
// last element is at (cols - 1) * ld + rows - 1.
bool inside_device_memory(const void* p, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld) {
  if (rows == 0 || cols == 0) return true;
  return p && syemu::is_device_memory(p, size_t((cols - 1) * ld + rows) * elem_bytes(t));
}

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T; }

}  // namespace

const char* cublasGetStatusString(cublasStatus_t status) { return cublasLtGetStatusString(status); }

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext{};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void* alpha_array,
                                          const void* const Aarray[], cudaDataType_t Atype, const int lda_array[],
                                          const void* const Barray[], cudaDataType_t Btype, const int ldb_array[],
                                          const void* beta_array, void* const Carray[], cudaDataType_t Ctype,
                                          const int ldc_array[], int group_count, const int group_size[],
                                          cublasComputeType_t computeType) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (group_count < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (group_count == 0) return CUBLAS_STATUS_SUCCESS;
  if (!transa_array || !transb_array || !m_array || !n_array || !k_array || !alpha_array || !lda_array ||
      !ldb_array || !beta_array || !ldc_array || !group_size || !Aarray || !Barray || !Carray)
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool types_ok = computeType == CUBLAS_COMPUTE_32F && Atype == Btype && Btype == Ctype &&
                        (Atype == CUDA_R_32F || Atype == CUDA_R_16BF);
  if (!types_ok) return CUBLAS_STATUS_NOT_SUPPORTED;

  // Pass 1: the per-group arguments, as the library checks them.
  int64_t problems = 0;
  for (int i = 0; i < group_count; ++i) {
    const bool ta = transa_array[i] == CUBLAS_OP_T, tb = transb_array[i] == CUBLAS_OP_T;
    const int64_t m = m_array[i], n = n_array[i], k = k_array[i];
    if (!valid_op(transa_array[i]) || !valid_op(transb_array[i]) || m < 0 || n < 0 || k < 0 || group_size[i] < 0)
      return CUBLAS_STATUS_INVALID_VALUE;
    if (lda_array[i] < imax1(ta ? k : m) || ldb_array[i] < imax1(tb ? n : k) || ldc_array[i] < imax1(m))
      return CUBLAS_STATUS_INVALID_VALUE;
    problems += group_size[i];
  }
  // The pointer arrays are read by the GPU: they must be device memory, as must every matrix.
  const size_t array_bytes = size_t(problems) * sizeof(void*);
  if (!syemu::is_device_memory(Aarray, array_bytes) || !syemu::is_device_memory(Barray, array_bytes) ||
      !syemu::is_device_memory(Carray, array_bytes))
    return CUBLAS_STATUS_INVALID_VALUE;
  int64_t p = 0;
  for (int i = 0; i < group_count; ++i) {
    const bool ta = transa_array[i] == CUBLAS_OP_T, tb = transb_array[i] == CUBLAS_OP_T;
    const int64_t m = m_array[i], n = n_array[i], k = k_array[i];
    for (int j = 0; j < group_size[i]; ++j, ++p) {
      if (m == 0 || n == 0) continue;  // nothing is read or written
      const bool ok = inside_device_memory(Carray[p], Ctype, m, n, ldc_array[i]) &&
                      (k == 0 || (inside_device_memory(Aarray[p], Atype, ta ? k : m, ta ? m : k, lda_array[i]) &&
                                  inside_device_memory(Barray[p], Btype, tb ? n : k, tb ? k : n, ldb_array[i])));
      if (!ok) return CUBLAS_STATUS_INVALID_VALUE;
    }
  }

  // Pass 2: compute. Scalars are float (the scale type of CUBLAS_COMPUTE_32F), one per group.
  p = 0;
  for (int i = 0; i < group_count; ++i) {
    const bool ta = transa_array[i] == CUBLAS_OP_T, tb = transb_array[i] == CUBLAS_OP_T;
    const int64_t m = m_array[i], n = n_array[i], k = k_array[i];
    const int64_t lda = lda_array[i], ldb = ldb_array[i], ldc = ldc_array[i];
    float al, be;
    std::memcpy(&al, static_cast<const float*>(alpha_array) + i, sizeof al);
    std::memcpy(&be, static_cast<const float*>(beta_array) + i, sizeof be);
    for (int g = 0; g < group_size[i]; ++g, ++p)
      if (!syemu::blas_gemm(ta, tb, m, n, k, al, Aarray[p], Atype, lda, Barray[p], Btype, ldb, be, Carray[p], Ctype, ldc,
                            Carray[p], Ctype, ldc))
        return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return CUBLAS_STATUS_SUCCESS;
}
