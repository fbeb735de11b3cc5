// Softmax cross-entropy: a block per row for the forward (max, then the sum of exponentials, in
// float), one thread per logit for the backward (it recomputes the softmax from the saved lse).
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    ce_fwd_kernel(const T* logits, const int32_t* targets, float* lse, float* row_loss, int64_t v) {
  const int64_t row = blockIdx.x;
  const T* l = logits + row * v;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, to_f32(l[j]));
  mx = block_max(mx);
  float s = 0;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) s += expf(to_f32(l[j]) - mx);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const float z = mx + logf(s);
    lse[row] = z;
    row_loss[row] = z - to_f32(l[targets[row]]);
  }
}

template <class T>
__global__ void ce_bwd_kernel(const T* logits, const int32_t* targets, const float* lse, float scale, T* dlogits,
                              int64_t n, int64_t v) {
  const int64_t total = n * v, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / v, col = i % v;
    const float p = expf(to_f32(logits[i]) - lse[row]);
    const float onehot = col == targets[row] ? 1.0f : 0.0f;
    dlogits[i] = from_f32<T>(to_f32(dlogits[i]) + scale * (p - onehot));
  }
}

// Vocabulary-parallel cross-entropy over a shard of the logits (Backend::logits_row_max and
// cross_entropy_shard_sums): a block per row.
template <class T> __global__ void __launch_bounds__(kThreads) row_max_kernel(const T* logits, float* out, int64_t v) {
  const T* l = logits + int64_t(blockIdx.x) * v;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, to_f32(l[j]));
  mx = block_max(mx);
  if (threadIdx.x == 0) out[blockIdx.x] = mx;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    ce_shard_sums_kernel(const T* logits, const int32_t* targets, const float* gmax, float* sum_exp, float* target_logit,
                         int64_t v) {
  const int64_t row = blockIdx.x;
  const T* l = logits + row * v;
  const float m = gmax[row];
  float s = 0;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) s += expf(to_f32(l[j]) - m);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    sum_exp[row] = s;
    const int32_t t = targets[row];
    target_logit[row] = t >= 0 ? to_f32(l[t]) : 0.0f;
  }
}

}  // namespace

template <class T> void logits_row_max(const T* logits, float* out, int64_t n, int64_t v, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(unsigned(n), kThreads, 0, s, row_max_kernel<T>)(logits, out, v);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void cross_entropy_shard_sums(const T* logits, const int32_t* targets, const float* gmax, float* sum_exp,
                              float* target_logit, int64_t n, int64_t v, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(unsigned(n), kThreads, 0, s, ce_shard_sums_kernel<T>)(logits, targets, gmax, sum_exp, target_logit, v);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, float* lse, float* row_loss, int64_t n, int64_t v,
                           cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(unsigned(n), kThreads, 0, s, ce_fwd_kernel<T>)(logits, targets, lse, row_loss, v);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const float* lse, float scale, T* dlogits,
                            int64_t n, int64_t v, cudaStream_t s) {
  if (n * v == 0) return;
  SY_LAUNCH(grid_for(n * v, kThreads), kThreads, 0, s, ce_bwd_kernel<T>)(logits, targets, lse, scale, dlogits, n, v);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE(T)                                                                                       \
  template void cross_entropy_forward<T>(const T*, const int32_t*, float*, float*, int64_t, int64_t,            \
                                         cudaStream_t);                                                         \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const float*, float, T*, int64_t, int64_t, \
                                          cudaStream_t);                                                        \
  template void logits_row_max<T>(const T*, float*, int64_t, int64_t, cudaStream_t);                            \
  template void cross_entropy_shard_sums<T>(const T*, const int32_t*, const float*, float*, float*, int64_t,     \
                                            int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
