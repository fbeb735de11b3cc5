// Row movement: the token embedding and the MoE permutation with capacity (gather into expert
// order, its adjoint, the weighted combine and its backward). Dropped slots are -1 and skipped.
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;
constexpr int kDotThreads = 128;  // combine backward: one block per (token, slot)

template <class T> __global__ void gather_kernel(const T* src, const int32_t* rows, T* out, int64_t m, int64_t d) {
  const int64_t total = m * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    out[i] = src[int64_t(rows[i / d]) * d + i % d];
}

// An id of -1 (a token of another rank's vocabulary shard) gives a zero row.
template <class T> __global__ void embedding_fwd_kernel(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d) {
  const int64_t total = n * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int32_t id = ids[i / d];
    out[i] = id >= 0 ? table[int64_t(id) * d + i % d] : from_f32<T>(0.0f);
  }
}

// Column j of the table gets its tokens' rows added in token order by one thread (ids of -1
// skipped).
template <class T>
__global__ void embedding_bwd_kernel(const T* dout, const int32_t* ids, float* dtable, int64_t n, int64_t d) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] >= 0) dtable[int64_t(ids[i]) * d + j] += to_f32(dout[i * d + j]);
}

// out[i, c] (+)= sum_j weight_j * src[slots[i, j], c]; unit weights when w is null (gather's adjoint).
template <class T>
__global__ void slot_sum_kernel(const T* src, const int32_t* slots, const float* w, T* out, int64_t n, int k, int64_t d) {
  const int64_t total = n * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t row = i / d, c = i % d;
    float acc = to_f32(out[i]);
    for (int j = 0; j < k; ++j) {
      const int32_t sl = slots[row * k + j];
      if (sl >= 0) acc += (w ? w[row * k + j] : 1.0f) * to_f32(src[int64_t(sl) * d + c]);
    }
    out[i] = from_f32<T>(acc);
  }
}

// Block (token i, slot j): dy[slot, :] += w dout[i, :] and dw[i, j] += <dout[i, :], y[slot, :]>.
// A dropped slot ends the whole block at once, so no thread misses the reduction's barriers.
template <class T>
__global__ void __launch_bounds__(kDotThreads) combine_bwd_kernel(const T* dout, const T* y, const int32_t* slots,
                                                                  const float* w, T* dy, float* dw, int k, int64_t d) {
  const int64_t pair = blockIdx.x, row = pair / k;
  const int32_t sl = slots[pair];
  if (sl < 0) return;
  const float wt = w[pair];
  const T *g = dout + row * d, *yr = y + int64_t(sl) * d;
  T* dyr = dy + int64_t(sl) * d;
  float dot = 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const float gc = to_f32(g[c]);
    dyr[c] = from_f32<T>(to_f32(dyr[c]) + wt * gc);
    dot += gc * to_f32(yr[c]);
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) dw[pair] += dot;
}

}  // namespace

template <class T> void embedding_forward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d, cudaStream_t s) {
  if (n * d == 0) return;
  SY_LAUNCH(grid_for(n * d, kThreads), kThreads, 0, s, embedding_fwd_kernel<T>)(table, ids, out, n, d);
}

template <class T>
void embedding_backward(const T* dout, const int32_t* ids, float* dtable, int64_t n, int64_t d, cudaStream_t s) {
  if (n * d == 0) return;
  SY_LAUNCH(unsigned((d + kThreads - 1) / kThreads), kThreads, 0, s, embedding_bwd_kernel<T>)(dout, ids, dtable, n, d);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T> void gather_rows(const T* x, const int32_t* src_rows, T* out, int64_t m, int64_t d, cudaStream_t s) {
  if (m * d == 0) return;
  SY_LAUNCH(grid_for(m * d, kThreads), kThreads, 0, s, gather_kernel<T>)(x, src_rows, out, m, d);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void gather_rows_backward(const T* dxp, const int32_t* slots, T* dx, int64_t n, int k, int64_t d, cudaStream_t s) {
  if (n * d == 0) return;
  SY_LAUNCH(grid_for(n * d, kThreads), kThreads, 0, s, slot_sum_kernel<T>)(dxp, slots, nullptr, dx, n, k, d);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void combine_forward(const T* y, const int32_t* slots, const float* w, T* out, int64_t n, int k, int64_t d,
                     cudaStream_t s) {
  if (n * d == 0) return;
  SY_LAUNCH(grid_for(n * d, kThreads), kThreads, 0, s, slot_sum_kernel<T>)(y, slots, w, out, n, k, d);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void combine_backward(const T* dout, const T* y, const int32_t* slots, const float* w, T* dy, float* dw, int64_t n,
                      int k, int64_t d, cudaStream_t s) {
  if (n * k == 0) return;
  SY_LAUNCH(unsigned(n * k), kDotThreads, 0, s, combine_bwd_kernel<T>)(dout, y, slots, w, dy, dw, k, d);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE(T)                                                                                          \
  template void embedding_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t, cudaStream_t);                \
  template void embedding_backward<T>(const T*, const int32_t*, float*, int64_t, int64_t, cudaStream_t);           \
  template void gather_rows<T>(const T*, const int32_t*, T*, int64_t, int64_t, cudaStream_t);                      \
  template void gather_rows_backward<T>(const T*, const int32_t*, T*, int64_t, int, int64_t, cudaStream_t);        \
  template void combine_forward<T>(const T*, const int32_t*, const float*, T*, int64_t, int, int64_t,              \
                                   cudaStream_t);                                                                  \
  template void combine_backward<T>(const T*, const T*, const int32_t*, const float*, T*, float*, int64_t, int,    \
                                    int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
