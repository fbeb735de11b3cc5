// cuDNN for this build, and SY_CUDNN_CHECK, the one cuDNN return-code check.
//
// Under g++ (the emulator build) cuDNN is engine/cuda/emu/emu_cudnn.h: the handle API and the part
// of cudnn-frontend's graph API the wrapper uses, run on the host. Under nvcc it is the toolkit's
// cudnn.h with the header-only cudnn-frontend (cudnn_frontend.h), when CMake found both
// (SY_HAVE_CUDNN_FRONTEND, cmake/cuda.cmake); otherwise SY_HAVE_CUDNN is 0 and nothing of cuDNN is
// declared. Either way the wrapper names the frontend `fe` and the C API unqualified.
//
// SY_CUDNN_CHECK(call) takes both kinds of result: a cudnnStatus_t (cudnnGetErrorString's text)
// and the frontend's error_t (its message, which says which check of which tensor failed), and
// throws std::runtime_error with the call, file and line.
#pragma once

#include <stdexcept>
#include <string>

#include "engine/cuda/cuda_compat.h"

#if SY_CUDA_EMULATED
#include "engine/cuda/emu/emu_cudnn.h"
#define SY_HAVE_CUDNN 1
namespace sy::cuda {
using namespace ::syemu::cudnn;  // the emulated C API, in its own namespace (emu_cudnn.h says why)
namespace fe = ::syemu::cudnn::cudnn_frontend;
}  // namespace sy::cuda
#elif defined(SY_HAVE_CUDNN_FRONTEND)
#include <cudnn.h>
#include <cudnn_frontend.h>
#define SY_HAVE_CUDNN 1
namespace sy::cuda {
namespace fe = ::cudnn_frontend;
}  // namespace sy::cuda
#else
#define SY_HAVE_CUDNN 0
#endif

#if SY_HAVE_CUDNN
#define SY_CUDNN_CHECK(call) ::sy::cuda::cudnn_check((call), #call, __FILE__, __LINE__)

namespace sy::cuda {
SY_CUDA_NS_BEGIN

inline void cudnn_check(cudnnStatus_t s, const char* call, const char* file, int line) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                           cudnnGetErrorString(s));
}

// By value: the frontend's get_message() is not const.
inline void cudnn_check(fe::error_t e, const char* call, const char* file, int line) {
  if (e.is_good()) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: cudnn_frontend error " + std::to_string(int(e.get_code())) + ": " +
                           e.get_message());
}

SY_CUDA_NS_END
}  // namespace sy::cuda
#endif
