// SY_NCCL_CHECK: the one NCCL return-code check. A failing call throws with the call's text, file
// and line, NCCL's name for the code and the library's last error message (the code alone does not
// say which of many calls failed, nor why).
//
// ncclInProgress is returned, not thrown: on a nonblocking communicator it means the call is still
// running, and the caller must poll ncclCommGetAsyncError until it is not (NcclComm's settle())
// before the next NCCL call on that communicator.
#pragma once

#include <stdexcept>
#include <string>

#include "parallel/nccl/nccl_compat.h"

#define SY_NCCL_CHECK(call) ::sy::nccl::nccl_check((call), #call, __FILE__, __LINE__)

namespace sy::nccl {
SY_CUDA_NS_BEGIN  // the two builds' ncclResult_t differ: one name per build

inline ncclResult_t nccl_check(ncclResult_t r, const char* call, const char* file, int line) {
  if (r == ncclSuccess || r == ncclInProgress) return r;
  const char* last = ncclGetLastError(nullptr);
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " + ncclGetErrorString(r) +
                           (last && *last ? std::string(" (") + last + ")" : std::string()));
}

SY_CUDA_NS_END
}  // namespace sy::nccl
