// Row movement: the token embedding and the MoE permutation with capacity (gather into expert
// order, its adjoint, the weighted combine and its backward; dropped slots are -1 and skipped),
// and the experts' biases over their row ranges (GPT-OSS) with their column-sum gradients.
#include <algorithm>

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

// The experts' biases. A launch covers up to kBiasExperts experts, blockIdx.y the expert: its
// rows and vector travel in the kernel's parameter (half a KiB), so no table has to be copied to
// the device and ordered against the kernels that read it.
constexpr int kBiasExperts = 32;
template <class P> struct ExpertTable {
  P v[kBiasExperts];                // expert j's vector [w]
  int64_t lo[kBiasExperts + 1];     // expert j owns rows [lo[j], lo[j + 1])
};

// x[r, :] = v (accumulate: += v) on each of the expert's rows.
template <class T>
__global__ void expert_bias_rows_kernel(T* x, ExpertTable<const T*> tab, int64_t w, bool accumulate) {
  const int j = int(blockIdx.y);
  const int64_t lo = tab.lo[j], total = (tab.lo[j + 1] - lo) * w, stride = int64_t(gridDim.x) * blockDim.x;
  const T* b = tab.v[j];
  T* xs = x + lo * w;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    xs[i] = accumulate ? from_f32<T>(to_f32(xs[i]) + to_f32(b[i % w])) : b[i % w];
}

// db[c] += sum of the expert's rows of column c, in float. A block is a tile of kBiasCols columns
// by kBiasLanes lanes: lane l sums rows lo + l, lo + l + kBiasLanes, ... in order, then lane 0 adds
// the lanes' partial sums in lane order. Fixed order, one writer per element: the same bits on
// every run, no atomics.
constexpr int kBiasCols = 32, kBiasLanes = 8;
template <class T>
__global__ void __launch_bounds__(kBiasCols* kBiasLanes)
    expert_bias_grad_kernel(const T* x, ExpertTable<float*> tab, int64_t w) {
  __shared__ float part[kBiasLanes][kBiasCols];
  const int j = int(blockIdx.y);
  const int64_t lo = tab.lo[j], hi = tab.lo[j + 1];
  if (lo == hi) return;  // the whole block (an empty expert): its gradient is left as it was
  const int cx = int(threadIdx.x) % kBiasCols, lane = int(threadIdx.x) / kBiasCols;
  const int64_t c = int64_t(blockIdx.x) * kBiasCols + cx;
  float acc = 0;
  if (c < w)
    for (int64_t r = lo + lane; r < hi; r += kBiasLanes) acc += to_f32(x[r * w + c]);
  part[lane][cx] = acc;
  __syncthreads();
  if (lane == 0 && c < w) {
    float total = part[0][cx];
    for (int l = 1; l < kBiasLanes; ++l) total += part[l][cx];
    tab.v[j][c] += total;
  }
}

// Fills the table of experts [g0, g0 + count) and returns the most rows any of them owns.
template <class P>
int64_t expert_table(ExpertTable<P>& tab, const P* v, const int64_t* offsets, int64_t g0, int count) {
  int64_t most = 0;
  for (int j = 0; j < count; ++j) {
    tab.v[j] = v[g0 + j];
    tab.lo[j] = offsets[g0 + j];
    most = std::max(most, offsets[g0 + j + 1] - offsets[g0 + j]);
  }
  tab.lo[count] = offsets[g0 + count];
  return most;
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

template <class T>
void expert_bias_rows(T* x, const T* const* bias, const int64_t* offsets, int64_t e, int64_t w, bool accumulate,
                      cudaStream_t s) {
  for (int64_t g0 = 0; g0 < e; g0 += kBiasExperts) {
    const int count = int(std::min<int64_t>(kBiasExperts, e - g0));
    ExpertTable<const T*> tab{};
    const int64_t most = expert_table(tab, bias, offsets, g0, count);
    if (most * w == 0) continue;  // every expert of the chunk empty: no launch (an empty grid)
    SY_LAUNCH(dim3(grid_for(most * w, kThreads), unsigned(count)), kThreads, 0, s, expert_bias_rows_kernel<T>)(
        x, tab, w, accumulate);
    SY_CUDA_CHECK(cudaGetLastError());
  }
}

template <class T>
void expert_bias_grad(const T* x, float* const* db, const int64_t* offsets, int64_t e, int64_t w, cudaStream_t s) {
  for (int64_t g0 = 0; g0 < e; g0 += kBiasExperts) {
    const int count = int(std::min<int64_t>(kBiasExperts, e - g0));
    ExpertTable<float*> tab{};
    // A chunk with no rows launches nothing, so every launch has a block that reaches the barrier.
    if (expert_table(tab, db, offsets, g0, count) * w == 0) continue;
    SY_LAUNCH(dim3(unsigned((w + kBiasCols - 1) / kBiasCols), unsigned(count)), kBiasCols * kBiasLanes, 0, s,
              expert_bias_grad_kernel<T>)(x, tab, w);
    SY_CUDA_CHECK(cudaGetLastError());
  }
}

#define SY_INSTANTIATE(T)                                                                                          \
  template void embedding_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t, cudaStream_t);                \
  template void embedding_backward<T>(const T*, const int32_t*, float*, int64_t, int64_t, cudaStream_t);           \
  template void gather_rows<T>(const T*, const int32_t*, T*, int64_t, int64_t, cudaStream_t);                      \
  template void gather_rows_backward<T>(const T*, const int32_t*, T*, int64_t, int, int64_t, cudaStream_t);        \
  template void combine_forward<T>(const T*, const int32_t*, const float*, T*, int64_t, int, int64_t,              \
                                   cudaStream_t);                                                                  \
  template void combine_backward<T>(const T*, const T*, const int32_t*, const float*, T*, float*, int64_t, int,    \
                                    int64_t, cudaStream_t);                                                        \
  template void expert_bias_rows<T>(T*, const T* const*, const int64_t*, int64_t, int64_t, bool, cudaStream_t);  \
  template void expert_bias_grad<T>(const T*, float* const*, const int64_t*, int64_t, int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
