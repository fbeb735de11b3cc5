// SY_CUDA_CHECK: the one CUDA runtime return-code check. A failing call throws with the call's
// text, file and line, since the error code alone does not say which of many calls failed.
// After a launch, SY_CUDA_CHECK(cudaGetLastError()) reports a bad launch configuration.
#pragma once

#include <stdexcept>
#include <string>

#include "engine/cuda/cuda_compat.h"

#define SY_CUDA_CHECK(call) ::sy::cuda::cuda_check((call), #call, __FILE__, __LINE__)

namespace sy::cuda {

inline void cuda_check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                           cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace sy::cuda
