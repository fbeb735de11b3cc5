// SwiGLU and RoPE, forward and backward: one thread per output element (SwiGLU) or per rotated
// pair (RoPE), in grid-stride loops over 64-bit indices.
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <class T> __global__ void swiglu_fwd_kernel(const T* h, T* out, int64_t n, int64_t f) {
  const int64_t total = n * f, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / f, col = i % f;
    const float g = to_f32(h[row * 2 * f + col]), u = to_f32(h[row * 2 * f + f + col]);
    out[i] = from_f32<T>(g * sigmoid(g) * u);
  }
}

// d/dgate = dout * up * silu'(gate) with silu'(g) = s (1 + g (1 - s)); d/dup = dout * silu(gate).
template <class T> __global__ void swiglu_bwd_kernel(const T* dout, const T* h, T* dh, int64_t n, int64_t f) {
  const int64_t total = n * f, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / f, col = i % f, gi = row * 2 * f + col, ui = gi + f;
    const float g = to_f32(h[gi]), u = to_f32(h[ui]), d = to_f32(dout[i]), s = sigmoid(g);
    dh[gi] = from_f32<T>(to_f32(dh[gi]) + d * u * s * (1.0f + g * (1.0f - s)));
    dh[ui] = from_f32<T>(to_f32(dh[ui]) + d * g * s);
  }
}

// One thread per pair (i, i + hd/2) of one head of one row: it reads both before writing both,
// so y may alias x. Backward applies the transposed rotation and adds.
template <class T, bool kBackward>
__global__ void rope_kernel(const T* x, const int32_t* pos, const float* cs, const float* sn, T* y, int64_t n,
                            int64_t heads, int64_t half) {
  const int64_t total = n * heads * half, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t j = i % half, rh = i / half, row = rh / heads;
    const int64_t a_at = rh * 2 * half + j, b_at = a_at + half, t = int64_t(pos[row]) * half + j;
    const float a = to_f32(x[a_at]), b = to_f32(x[b_at]), c = cs[t], s = sn[t];
    if (!kBackward) {
      y[a_at] = from_f32<T>(a * c - b * s);
      y[b_at] = from_f32<T>(b * c + a * s);
    } else {
      y[a_at] = from_f32<T>(to_f32(y[a_at]) + a * c + b * s);
      y[b_at] = from_f32<T>(to_f32(y[b_at]) + b * c - a * s);
    }
  }
}

}  // namespace

template <class T> void swiglu_forward(const T* h, T* out, int64_t n, int64_t f, cudaStream_t s) {
  if (n * f == 0) return;
  SY_LAUNCH(grid_for(n * f, kThreads), kThreads, 0, s, swiglu_fwd_kernel<T>)(h, out, n, f);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T> void swiglu_backward(const T* dout, const T* h, T* dh, int64_t n, int64_t f, cudaStream_t s) {
  if (n * f == 0) return;
  SY_LAUNCH(grid_for(n * f, kThreads), kThreads, 0, s, swiglu_bwd_kernel<T>)(dout, h, dh, n, f);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void rope_forward(const T* x, const int32_t* pos, const float* cos, const float* sin, T* y, int64_t n, int64_t heads,
                  int64_t hd, cudaStream_t s) {
  const int64_t pairs = n * heads * (hd / 2);
  if (pairs == 0) return;
  SY_LAUNCH(grid_for(pairs, kThreads), kThreads, 0, s, rope_kernel<T, false>)(x, pos, cos, sin, y, n, heads, hd / 2);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void rope_backward(const T* dy, const int32_t* pos, const float* cos, const float* sin, T* dx, int64_t n,
                   int64_t heads, int64_t hd, cudaStream_t s) {
  const int64_t pairs = n * heads * (hd / 2);
  if (pairs == 0) return;
  SY_LAUNCH(grid_for(pairs, kThreads), kThreads, 0, s, rope_kernel<T, true>)(dy, pos, cos, sin, dx, n, heads, hd / 2);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE(T)                                                                                       \
  template void swiglu_forward<T>(const T*, T*, int64_t, int64_t, cudaStream_t);                                \
  template void swiglu_backward<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t);                     \
  template void rope_forward<T>(const T*, const int32_t*, const float*, const float*, T*, int64_t, int64_t,     \
                                int64_t, cudaStream_t);                                                         \
  template void rope_backward<T>(const T*, const int32_t*, const float*, const float*, T*, int64_t, int64_t,    \
                                 int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
