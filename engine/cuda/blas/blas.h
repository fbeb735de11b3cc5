// Blas: the one wrapper around cuBLASLt (the emulator's host cuBLASLt under g++). The engine's
// matrices are row-major; cuBLAS's are column-major. A row-major m x n matrix with leading
// dimension ld is, read column-major, its n x m transpose with the same ld, so
// C = op(A) op(B) (row-major) is computed as C^T = op(B)^T op(A)^T (column-major): the operands
// swap places and m and n swap, the transposes stay as they are.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/cuda/cuda_compat.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

enum class GemmType : uint8_t { F32, BF16 };

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

 private:
  struct Impl;
  Impl* impl_;
};

SY_CUDA_NS_END
}  // namespace sy::cuda
