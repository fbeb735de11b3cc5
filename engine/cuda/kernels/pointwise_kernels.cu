// SwiGLU (plain, or GPT-OSS's clamped form) and RoPE, forward and backward: one thread per output
// element (SwiGLU) or per rotated pair (RoPE), in grid-stride loops over 64-bit indices.
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// The clamps mirror the CPU reference's std::min and std::clamp, NaN included (a NaN gate stays
// NaN, so the step guard still sees it): min(g, L) is `L < g ? L : g`.
__device__ __forceinline__ float clamp_gate(float g, float lim) { return lim < g ? lim : g; }
__device__ __forceinline__ float clamp_up(float u, float lim) { return u < -lim ? -lim : (lim < u ? lim : u); }

template <class T, bool kClamped>
__global__ void swiglu_fwd_kernel(const T* h, T* out, int64_t n, int64_t f, GluParams glu) {
  const int64_t total = n * f, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / f, col = i % f;
    const float g0 = to_f32(h[row * 2 * f + col]), u0 = to_f32(h[row * 2 * f + f + col]);
    if constexpr (kClamped) {
      const float g = clamp_gate(g0, glu.limit), u = clamp_up(u0, glu.limit);
      out[i] = from_f32<T>(g * sigmoid(glu.alpha * g) * (u + 1.0f));
    } else {
      out[i] = from_f32<T>(g0 * sigmoid(g0) * u0);
    }
  }
}

// Plain: d/dgate = dout * up * silu'(gate) with silu'(g) = s (1 + g (1 - s)); d/dup = dout * silu(gate).
// Clamped: d/dg [g sigmoid(a g)] = s (1 + a g (1 - s)) with s = sigmoid(a g), times (u + 1); d/du =
// dout * g s; each zero where its clamp binds (it passes at the bound itself, as torch.clamp's).
// The pass flags multiply rather than select, as the CPU reference's, so a NaN still propagates.
template <class T, bool kClamped>
__global__ void swiglu_bwd_kernel(const T* dout, const T* h, T* dh, int64_t n, int64_t f, GluParams glu) {
  const int64_t total = n * f, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / f, col = i % f, gi = row * 2 * f + col, ui = gi + f;
    const float g0 = to_f32(h[gi]), u0 = to_f32(h[ui]), d = to_f32(dout[i]);
    float dg, du;
    if constexpr (kClamped) {
      const float lim = glu.limit, a = glu.alpha;
      const float g = clamp_gate(g0, lim), u = clamp_up(u0, lim), s = sigmoid(a * g);
      const float pass_g = g0 <= lim ? 1.0f : 0.0f, pass_u = u0 >= -lim && u0 <= lim ? 1.0f : 0.0f;
      dg = pass_g * d * (u + 1.0f) * s * (1.0f + a * g * (1.0f - s));
      du = pass_u * d * g * s;
    } else {
      const float s = sigmoid(g0);
      dg = d * u0 * s * (1.0f + g0 * (1.0f - s));
      du = d * g0 * s;
    }
    dh[gi] = from_f32<T>(to_f32(dh[gi]) + dg);
    dh[ui] = from_f32<T>(to_f32(dh[ui]) + du);
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

template <class T> void swiglu_forward(const T* h, T* out, int64_t n, int64_t f, cudaStream_t s, GluParams glu) {
  if (n * f == 0) return;
  const unsigned grid = grid_for(n * f, kThreads);
  if (glu.limit > 0) SY_LAUNCH(grid, kThreads, 0, s, swiglu_fwd_kernel<T, true>)(h, out, n, f, glu);
  else SY_LAUNCH(grid, kThreads, 0, s, swiglu_fwd_kernel<T, false>)(h, out, n, f, glu);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void swiglu_backward(const T* dout, const T* h, T* dh, int64_t n, int64_t f, cudaStream_t s, GluParams glu) {
  if (n * f == 0) return;
  const unsigned grid = grid_for(n * f, kThreads);
  if (glu.limit > 0) SY_LAUNCH(grid, kThreads, 0, s, swiglu_bwd_kernel<T, true>)(dout, h, dh, n, f, glu);
  else SY_LAUNCH(grid, kThreads, 0, s, swiglu_bwd_kernel<T, false>)(dout, h, dh, n, f, glu);
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
  template void swiglu_forward<T>(const T*, T*, int64_t, int64_t, cudaStream_t, GluParams);                     \
  template void swiglu_backward<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t, GluParams);          \
  template void rope_forward<T>(const T*, const int32_t*, const float*, const float*, T*, int64_t, int64_t,     \
                                int64_t, cudaStream_t);                                                         \
  template void rope_backward<T>(const T*, const int32_t*, const float*, const float*, T*, int64_t, int64_t,    \
                                 int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
