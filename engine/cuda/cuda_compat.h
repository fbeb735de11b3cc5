// The one include of every .cu file of the project: the CUDA headers under nvcc, the host emulator
// (engine/cuda/emu/) under g++, and the few spellings that must differ between the two.
//
//   SY_LAUNCH(grid, block, smem, stream, kernel)(args...)   a kernel launch (kernel last, so a
//                                                           template-id with commas needs no parentheses)
//   SY_DYNAMIC_SMEM(T, name)                                T* name = the block's dynamic shared memory
//   namespace sy::cuda { SY_CUDA_NS_BEGIN ... SY_CUDA_NS_END }   build-specific symbols, so the two
//                                                           builds of one file never clash at link time
#pragma once

// SY_CUDA_DEVICE_BUILD: host-only files of the nvcc build (the GPU test program) see the real CUDA
// headers too, though the host compiler compiles them.
#if defined(__CUDACC__) || defined(SY_CUDA_DEVICE_BUILD)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define SY_CUDA_EMULATED 0
#define SY_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
#define SY_DYNAMIC_SMEM(T, name)                                    \
  extern __shared__ __align__(16) unsigned char sy_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(sy_dynamic_smem_)
#define SY_CUDA_NS_BEGIN inline namespace device {
#else
#include "engine/cuda/emu/cuda_emu.h"
#define SY_CUDA_EMULATED 1
#define SY_LAUNCH(grid, block, smem, stream, ...) ::syemu::launch(__VA_ARGS__, (grid), (block), (smem), (stream))
#define SY_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::syemu::dynamic_smem())
#define SY_CUDA_NS_BEGIN inline namespace emu {
#endif
#define SY_CUDA_NS_END }
