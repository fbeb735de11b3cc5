// How code outside engine/cuda/ makes a CUDA backend, in plain C++ (no CUDA or emulator headers):
// the device build (nvcc, sy_cuda) defines the cuda_* functions, the emulator build (g++,
// sy_cuda_emu) the emulated_* ones, so a program can link either or both and choose at run time.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"

namespace sy::cuda {

// GPUs this process sees; 0 when there is none or no usable driver (why goes to *why).
int cuda_device_count(std::string* why = nullptr);
// The CUDA backend on GPU `device` (a rank's local rank, modulo the visible count).
std::unique_ptr<Backend> make_cuda_backend(int device);

// The same backend code on the host under the CUDA emulator (one emulated device).
std::unique_ptr<Backend> make_emulated_backend();
// The most blocks an emulated grid-stride kernel launches (see grid_for in
// engine/cuda/kernels/kernel_common.cuh): 16 by default, 0 for as many as the work needs.
void set_emulated_grid_stride_blocks(int64_t blocks);

}  // namespace sy::cuda
