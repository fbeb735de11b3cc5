// What the two files of Blas share (blas.cu: cuBLASLt GEMM; grouped_gemm.cu: cuBLAS grouped GEMM):
// the libraries' headers, SY_CUBLAS_CHECK and Blas::Impl. Not for use outside engine/cuda/blas/.
#pragma once

#include <stdexcept>
#include <string>

#include "engine/cuda/blas/blas.h"

#if SY_CUDA_EMULATED
#include "engine/cuda/emu/emu_cublas.h"
#include "engine/cuda/emu/emu_cublaslt.h"
#else
#include <cublasLt.h>
#include <cublas_v2.h>
#endif

// The one cuBLAS return-code check, for cuBLASLt and cuBLAS calls alike: the two libraries share
// cublasStatus_t and its names.
#define SY_CUBLAS_CHECK(call) ::sy::cuda::cublas_check((call), #call, __FILE__, __LINE__)

namespace sy::cuda {
SY_CUDA_NS_BEGIN

inline void cublas_check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                           cublasLtGetStatusString(s));
}

inline cudaDataType_t data_type(GemmType t) { return t == GemmType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

// The grouped GEMM's state (grouped_gemm.cu): created on the first grouped_gemm, so a Blas that
// never groups creates no cuBLAS handle.
struct GroupedState;
void destroy_grouped(GroupedState* g);

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  GroupedState* grouped = nullptr;
};

SY_CUDA_NS_END
}  // namespace sy::cuda
