// Helpers shared by the kernels: float <-> storage type conversions, warp and block reductions,
// and the launch-size arithmetic. Everything here runs unchanged under nvcc and the emulator.
//
// Mixed precision: a kernel's storage type T is float or __nv_bfloat16; every kernel converts to
// float on load, computes and accumulates in float (or double for the grad norm), and rounds once
// on store.
#pragma once

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
// Under the emulator every thread is a fiber, and a grid that would fill a GPU costs a context
// switch per thread for nothing: 16 blocks exercise the grid-stride loops just as well (each
// thread then strides more often), and whole-model runs get several times faster.
#if SY_CUDA_EMULATED
inline constexpr int64_t kGridStrideBlocks = 16;
#else
inline constexpr int64_t kGridStrideBlocks = 4096;
#endif
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = kGridStrideBlocks) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > max_blocks ? max_blocks : b));
}

}  // namespace sy::cuda
