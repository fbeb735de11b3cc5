// Helpers shared by the kernels: float <-> storage type conversions, warp and block reductions,
// and the launch-size arithmetic. Everything here runs unchanged under nvcc and the emulator.
//
// Mixed precision: a kernel's storage type T is float or __nv_bfloat16; every kernel converts to
// float on load, computes and accumulates in float (or double for the grad norm), and rounds once
// on store.
#pragma once

#include <atomic>
#include <cstdint>

#include "engine/cuda/cuda_compat.h"

namespace sy::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

__host__ __device__ __forceinline__ float to_f32(float x) { return x; }
__host__ __device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __host__ __device__ __forceinline__ T from_f32(float x);
template <> __host__ __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

template <class A> __device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

template <class A> __device__ __forceinline__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) {
    const A u = __shfl_xor_sync(kFullMask, v, o);
    v = u > v ? u : v;
  }
  return v;
}

// The sum of v over a block of a multiple of 32 threads (at most 1024), returned to every thread.
// The trailing barrier lets the block call it again at once: without it a fast warp's next write
// of `part` could overtake a slow warp's read of this call's total.
template <class A> __device__ A block_sum(A v) {
  __shared__ A part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  A total = lane < warps ? part[lane] : A(0);
  total = warp_sum(total);
  __syncthreads();
  return total;
}

template <class A> __device__ A block_max(A v) {
  __shared__ A part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  A m = part[0];
  for (int w = 1; w < warps; ++w) m = part[w] > m ? part[w] : m;
  __syncthreads();
  return m;
}

// Blocks for a grid-stride loop over n elements: enough to fill a GPU, never more than the work.
// Under the emulator the cap is a setting: 16 by default, so that kernel tests exercise every
// loop's striding (each thread strides often), and 0 (no cap: one element per thread) for
// whole-model runs (set_emulated_grid_stride_blocks, backend_factory.h). There a kernel that
// never synchronises runs its threads as plain calls (the emulator's direct mode) and walks its
// arrays in order, where 16 blocks would have each thread stride through memory 4096 elements at
// a time, a cache and TLB miss per element on the host.
#if SY_CUDA_EMULATED
inline std::atomic<int64_t> g_emu_grid_stride_blocks{16};
inline int64_t grid_stride_blocks() {
  const int64_t b = g_emu_grid_stride_blocks.load(std::memory_order_relaxed);
  return b > 0 ? b : 2147483647;
}
#else
inline int64_t grid_stride_blocks() { return 4096; }
#endif
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = grid_stride_blocks()) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > max_blocks ? max_blocks : b));
}

}  // namespace sy::cuda
