// Blas: the one wrapper around cuBLASLt and cuBLAS (the emulator's host libraries under g++). The
// engine's matrices are row-major; cuBLAS's are column-major. A row-major m x n matrix with leading
// dimension ld is, read column-major, its n x m transpose with the same ld, so
// C = op(A) op(B) (row-major) is computed as C^T = op(B)^T op(A)^T (column-major): the operands
// swap places and m and n swap, the transposes stay as they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/cuda/cuda_compat.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

enum class GemmType : uint8_t { F32, BF16 };

// One problem of a grouped GEMM: its sizes and operands (row-major, as in Blas::gemm). Every size
// may differ between groups: the MoE experts' forward and input-gradient GEMMs differ in m (the
// expert's rows), their weight-gradient GEMMs in k (the rows are the contracted dimension).
struct GemmGroup {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
};

class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // C[m x n] = alpha op(A) op(B) + beta C, row-major with leading dimensions (elements). A and B
  // are of type ab, C of type c; fp32 accumulation. beta == 0 overwrites C whatever it held.
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* a, int64_t lda, const void* b,
            int64_t ldb, float beta, void* c, int64_t ldc, GemmType ab, GemmType ct, cudaStream_t s);

  // For every group g: C_g[m_g x n_g] = alpha op(A_g) op(B_g) + beta C_g, with op(A_g) m_g x k_g and
  // op(B_g) k_g x n_g, row-major; the transposes, leading dimensions, types, alpha and beta are
  // shared (grouped_gemm.cu). Types as gemm's (ab, ct): F32/F32, BF16/BF16 or BF16/F32; fp32
  // accumulation; beta == 0 overwrites C even where it holds NaN. Groups with m or n of 0 are
  // skipped; a group with k of 0 gets C = beta C. One cublasGemmGroupedBatchedEx for all groups
  // where cuBLAS supports the types, else one cuBLASLt GEMM per group (see grouped_native).
  // Throws std::invalid_argument for negative sizes, leading dimensions below a row, F32/BF16.
  void grouped_gemm(bool ta, bool tb, std::span<const GemmGroup> groups, float alpha, int64_t lda, int64_t ldb,
                    float beta, int64_t ldc, GemmType ab, GemmType ct, cudaStream_t s);

  // Whether grouped_gemm on these types runs as one grouped cuBLAS call (true), or (false) as a
  // GEMM per group because cuBLAS answered CUBLAS_STATUS_NOT_SUPPORTED; before the first call on
  // the types, whether it will try the grouped call.
  bool grouped_native(GemmType ab, GemmType ct) const;

 private:
  struct Impl;
  Impl* impl_;
};

SY_CUDA_NS_END
}  // namespace sy::cuda
