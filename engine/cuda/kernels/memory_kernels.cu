// Whole-buffer elementwise kernels behind the backend's memory ops: fill, dtype conversion,
// axpy, scale and the non-finite count (grid-stride loops), and the strided column-block copy.
#include <type_traits>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;

#define SY_GRID_STRIDE(i, n)                                                                \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride_ = int64_t(gridDim.x) * blockDim.x; \
       i < (n); i += stride_)

template <class T> __global__ void fill_kernel(T* x, T value, int64_t n) {
  SY_GRID_STRIDE(i, n) x[i] = value;
}

// bfloat16 goes through float (round to nearest even on the way down); float <-> double directly.
template <class S, class D> __global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  if constexpr (std::is_same_v<S, __nv_bfloat16> || std::is_same_v<D, __nv_bfloat16>) {
    SY_GRID_STRIDE(i, n) dst[i] = from_f32<D>(to_f32(src[i]));
  } else {
    SY_GRID_STRIDE(i, n) dst[i] = D(src[i]);
  }
}

// In float, rounded once on store (bf16 residual adds).
template <class T> __global__ void axpy_kernel(float alpha, const T* x, T* y, int64_t n) {
  SY_GRID_STRIDE(i, n) y[i] = from_f32<T>(fmaf(alpha, to_f32(x[i]), to_f32(y[i])));
}

template <class T> __global__ void scale_kernel(T* x, float alpha, int64_t n) {
  SY_GRID_STRIDE(i, n) x[i] = from_f32<T>(to_f32(x[i]) * alpha);
}

// One atomic per warp that saw a non-finite value, not one per element.
__global__ void nonfinite_kernel(const float* x, int64_t n, unsigned* count) {
  unsigned local = 0;
  SY_GRID_STRIDE(i, n) local += isfinite(x[i]) ? 0u : 1u;
  local = warp_sum(local);
  if (threadIdx.x % 32 == 0 && local) atomicAdd(count, local);
}

// Element e of the [rows, width] block: row e / width, column e % width, so consecutive threads
// touch consecutive columns of a row (coalesced) whatever the leading dimensions. bf16 adds in
// float and rounds once, as axpy.
template <class T>
__global__ void copy_columns_kernel(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t width, int64_t n,
                                    bool accumulate) {
  SY_GRID_STRIDE(e, n) {
    const int64_t r = e / width, c = e - r * width;
    const T x = src[r * ld_src + c];
    T& y = dst[r * ld_dst + c];
    y = accumulate ? from_f32<T>(to_f32(y) + to_f32(x)) : x;
  }
}

#undef SY_GRID_STRIDE

}  // namespace

template <class T> void fill(T* x, T value, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, fill_kernel<T>)(x, value, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class S, class D> void convert(const S* src, D* dst, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, convert_kernel<S, D>)(src, dst, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T> void axpy(float alpha, const T* x, T* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, axpy_kernel<T>)(alpha, x, y, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T> void scale(T* x, float alpha, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, scale_kernel<T>)(x, alpha, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

void count_nonfinite(const float* x, int64_t n, unsigned* count, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, nonfinite_kernel)(x, n, count);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void copy_columns(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows, int64_t width, bool accumulate,
                  cudaStream_t s) {
  const int64_t n = rows * width;
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, copy_columns_kernel<T>)(src, ld_src, dst, ld_dst, width, n,
                                                                            accumulate);
  SY_CUDA_CHECK(cudaGetLastError());
}

template void fill<float>(float*, float, int64_t, cudaStream_t);
template void fill<double>(double*, double, int64_t, cudaStream_t);
template void fill<int32_t>(int32_t*, int32_t, int64_t, cudaStream_t);
template void fill<__nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16, int64_t, cudaStream_t);
template void convert<float, double>(const float*, double*, int64_t, cudaStream_t);
template void convert<double, float>(const double*, float*, int64_t, cudaStream_t);
template void convert<float, __nv_bfloat16>(const float*, __nv_bfloat16*, int64_t, cudaStream_t);
template void convert<__nv_bfloat16, float>(const __nv_bfloat16*, float*, int64_t, cudaStream_t);
template void axpy<float>(float, const float*, float*, int64_t, cudaStream_t);
template void axpy<__nv_bfloat16>(float, const __nv_bfloat16*, __nv_bfloat16*, int64_t, cudaStream_t);
template void scale<float>(float*, float, int64_t, cudaStream_t);
template void scale<__nv_bfloat16>(__nv_bfloat16*, float, int64_t, cudaStream_t);
template void copy_columns<float>(const float*, int64_t, float*, int64_t, int64_t, int64_t, bool, cudaStream_t);
template void copy_columns<__nv_bfloat16>(const __nv_bfloat16*, int64_t, __nv_bfloat16*, int64_t, int64_t, int64_t,
                                          bool, cudaStream_t);

SY_CUDA_NS_END
}  // namespace sy::cuda
