// RMSNorm forward and backward: one block per row (forward) or per chunk of rows (backward), the
// row's sums reduced across the block in float.
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;
// Rows per backward block: dw's partial sums are [chunks, d], so more rows per block means less
// scratch and a shorter final column sum, fewer means more blocks to fill the GPU.
constexpr int64_t kRowsPerChunk = 32;

template <class T>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_fwd_kernel(const T* x, const T* w, float eps, T* y, float* rstd, int64_t d) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  T* yr = y + row * d;
  float ss = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = to_f32(xr[j]);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / float(d) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = from_f32<T>(to_f32(xr[j]) * r * to_f32(w[j]));
}

// dx = r (dy w) - x r^3 <dy w, x> / d per row; this block's rows' dy x r summed into part[chunk, :].
// A thread touches the same columns in every loop, so part needs no barrier.
template <class T>
__global__ void __launch_bounds__(kThreads) rmsnorm_bwd_kernel(const T* dy, const T* x, const T* w,
                                                               const float* rstd, T* dx, float* part, int64_t n,
                                                               int64_t d) {
  const int64_t r0 = int64_t(blockIdx.x) * kRowsPerChunk;
  const int64_t r1 = r0 + kRowsPerChunk < n ? r0 + kRowsPerChunk : n;
  float* pw = part + int64_t(blockIdx.x) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) pw[j] = 0;
  for (int64_t row = r0; row < r1; ++row) {
    const T *g = dy + row * d, *xr = x + row * d;
    T* dxr = dx + row * d;
    float dot = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dot += to_f32(g[j]) * to_f32(w[j]) * to_f32(xr[j]);
    dot = block_sum(dot);
    const float r = rstd[row], coef = dot * r * r * r / float(d);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const float gj = to_f32(g[j]), xj = to_f32(xr[j]);
      dxr[j] = from_f32<T>(to_f32(dxr[j]) + r * gj * to_f32(w[j]) - coef * xj);
      pw[j] += gj * xj * r;
    }
  }
}

// dw[j] += sum over chunks of part[c, j], in chunk order.
__global__ void column_sum_kernel(const float* part, int64_t chunks, int64_t d, float* dw) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += part[c * d + j];
  dw[j] += s;
}

}  // namespace

template <class T>
void rmsnorm_forward(const T* x, const T* w, float eps, T* y, float* rstd, int64_t n, int64_t d, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(unsigned(n), kThreads, 0, s, rmsnorm_fwd_kernel<T>)(x, w, eps, y, rstd, d);
  SY_CUDA_CHECK(cudaGetLastError());
}

size_t rmsnorm_backward_scratch(int64_t n, int64_t d) {
  return size_t((n + kRowsPerChunk - 1) / kRowsPerChunk * d);
}

template <class T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const float* rstd, T* dx, float* dw, float* scratch,
                      int64_t n, int64_t d, cudaStream_t s) {
  if (n == 0 || d == 0) return;
  const int64_t chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
  SY_LAUNCH(unsigned(chunks), kThreads, 0, s, rmsnorm_bwd_kernel<T>)(dy, x, w, rstd, dx, scratch, n, d);
  SY_CUDA_CHECK(cudaGetLastError());
  SY_LAUNCH(unsigned((d + kThreads - 1) / kThreads), kThreads, 0, s, column_sum_kernel)(scratch, chunks, d, dw);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE(T)                                                                                   \
  template void rmsnorm_forward<T>(const T*, const T*, float, T*, float*, int64_t, int64_t, cudaStream_t); \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const float*, T*, float*, float*, int64_t, \
                                    int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
