// CudaBackend: engine/backend.h on a CUDA device, through the project's kernels (kernels.h) and
// cuBLASLt (blas.h). Under the emulator the same code runs on the host, which is how CI tests it
// against the CPU backend. Tensors are float32 (int32 for indices); float64 tensors can be
// allocated, filled, copied, converted and transferred, but no op computes in float64.
//
// Every op runs on one stream; an op that returns a number to the host (a loss, a norm) waits for it.
#pragma once

#include <memory>

#include "engine/backend.h"
#include "engine/cuda/cuda_compat.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

// The CUDA backend on `device` (0, the emulated device, under the emulator). Code outside
// engine/cuda/ uses backend_factory.h instead.
std::unique_ptr<Backend> make_backend(int device = 0);

SY_CUDA_NS_END
}  // namespace sy::cuda
