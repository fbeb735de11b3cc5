// Causal grouped-query attention, the simple kernels: the fallback and the reference for the
// fused library path. One block per query row computes that row's scores into shared memory,
// softmax, and the weighted sum of values; the backward recomputes the probabilities from the
// saved log-sum-exp, with dq by query row and dk, dv by key row, so no two blocks write the same
// gradient element (no atomics; the same bits on every run).
#include <stdexcept>
#include <string>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 128;
constexpr size_t kSmemLimit = 48 * 1024;  // the default dynamic shared memory of a block

struct Dims {
  int64_t t, h, kv, hd;
  float scale;
  __device__ int64_t q_at(int64_t b, int64_t i, int64_t head) const { return ((b * t + i) * h + head) * hd; }
  __device__ int64_t kv_at(int64_t b, int64_t i, int64_t g) const { return ((b * t + i) * kv + g) * hd; }
};

// The long sums of these kernels (over the head dimension and over keys or queries) accumulate in
// double: they are the reference the fused path is checked against, and in float their rounding
// alone reaches 1e-5 of the result at a few hundred keys (as the CPU backend's float path does).
template <class T> __device__ float dot_row(const float* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t d = 0; d < n; ++d) s += double(a[d]) * double(to_f32(b[d]));
  return float(s);
}

template <class T> __device__ void load_row(const T* src, float* dst, int64_t n) {
  for (int64_t d = threadIdx.x; d < n; d += blockDim.x) dst[d] = to_f32(src[d]);
}

// Block (query i, head, batch): shared memory holds q [hd] then the scores [i + 1].
template <class T>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(const T* q, const T* k, const T* v, T* out, float* lse, Dims m) {
  const int64_t i = blockIdx.x, head = blockIdx.y, b = blockIdx.z, g = head / (m.h / m.kv);
  SY_DYNAMIC_SMEM(float, smem);
  float *qs = smem, *sc = smem + m.hd;
  load_row(q + m.q_at(b, i, head), qs, m.hd);
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    const float s = dot_row(qs, k + m.kv_at(b, j, g), m.hd) * m.scale;
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx);
  float sum = 0;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    const float p = expf(sc[j] - mx);
    sc[j] = p;
    sum += p;
  }
  sum = block_sum(sum);  // its barriers also publish every thread's sc[] to the loop below
  const float inv = 1.0f / sum;
  T* orow = out + m.q_at(b, i, head);
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) {
    double acc = 0;
    for (int64_t j = 0; j <= i; ++j) acc += double(sc[j]) * to_f32(v[m.kv_at(b, j, g) + d]);
    orow[d] = from_f32<T>(float(acc) * inv);
  }
  if (threadIdx.x == 0) lse[(b * m.h + head) * m.t + i] = mx + logf(sum);
}

// Block (query i, head, batch): dS_ij = P_ij (dO_i . v_j - dO_i . O_i) * scale, dq_i += sum_j dS_ij k_j.
// Shared memory: q [hd], dO [hd], dS [i + 1].
template <class T>
__global__ void __launch_bounds__(kThreads) attn_dq_kernel(const T* dout, const T* q, const T* k, const T* v,
                                                           const T* out, const float* lse, T* dq, Dims m) {
  const int64_t i = blockIdx.x, head = blockIdx.y, b = blockIdx.z, g = head / (m.h / m.kv);
  SY_DYNAMIC_SMEM(float, smem);
  float *qs = smem, *dos = smem + m.hd, *ds = smem + 2 * m.hd;
  const int64_t at = m.q_at(b, i, head);
  load_row(q + at, qs, m.hd);
  load_row(dout + at, dos, m.hd);
  float di = 0;
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) di += to_f32(dout[at + d]) * to_f32(out[at + d]);
  di = block_sum(di);  // also publishes qs and dos
  const float l = lse[(b * m.h + head) * m.t + i];
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    const float p = expf(dot_row(qs, k + m.kv_at(b, j, g), m.hd) * m.scale - l);
    ds[j] = p * (dot_row(dos, v + m.kv_at(b, j, g), m.hd) - di) * m.scale;
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) {
    double acc = 0;
    for (int64_t j = 0; j <= i; ++j) acc += double(ds[j]) * to_f32(k[m.kv_at(b, j, g) + d]);
    dq[at + d] = from_f32<T>(to_f32(dq[at + d]) + float(acc));
  }
}

// Block (key j, kv head, batch): over the group's query heads and the queries i >= j,
// dv_j += sum P_ij dO_i and dk_j += sum dS_ij q_i. Shared memory: k_j, v_j, dk, dv [hd each], then
// P and dS for the queries [t - j each].
template <class T>
__global__ void __launch_bounds__(kThreads) attn_dkv_kernel(const T* dout, const T* q, const T* k, const T* v,
                                                            const T* out, const float* lse, T* dk, T* dv, Dims m) {
  const int64_t j = blockIdx.x, g = blockIdx.y, b = blockIdx.z, group = m.h / m.kv, rows = m.t - j;
  SY_DYNAMIC_SMEM(float, smem);
  float *ks = smem, *vs = smem + m.hd, *dka = smem + 2 * m.hd, *dva = smem + 3 * m.hd;
  float *ps = smem + 4 * m.hd, *dss = ps + rows;
  const int64_t at = m.kv_at(b, j, g);
  load_row(k + at, ks, m.hd);
  load_row(v + at, vs, m.hd);
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) dka[d] = 0, dva[d] = 0;
  __syncthreads();
  for (int64_t head = g * group; head < (g + 1) * group; ++head) {
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
      const int64_t i = j + r, qa = m.q_at(b, i, head);
      double di = 0;
      for (int64_t d = 0; d < m.hd; ++d) di += double(to_f32(dout[qa + d])) * to_f32(out[qa + d]);
      const float p = expf(dot_row(ks, q + qa, m.hd) * m.scale - lse[(b * m.h + head) * m.t + i]);
      ps[r] = p;
      dss[r] = p * (dot_row(vs, dout + qa, m.hd) - float(di)) * m.scale;
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) {
      double ak = 0, av = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t qa = m.q_at(b, j + r, head);
        ak += double(dss[r]) * to_f32(q[qa + d]);
        av += double(ps[r]) * to_f32(dout[qa + d]);
      }
      dka[d] += float(ak);
      dva[d] += float(av);
    }
    __syncthreads();  // the next head overwrites ps and dss
  }
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) {
    dk[at + d] = from_f32<T>(to_f32(dk[at + d]) + dka[d]);
    dv[at + d] = from_f32<T>(to_f32(dv[at + d]) + dva[d]);
  }
}

size_t fwd_smem(int64_t t, int64_t hd) { return size_t(hd + t) * sizeof(float); }
size_t dq_smem(int64_t t, int64_t hd) { return size_t(2 * hd + t) * sizeof(float); }
size_t dkv_smem(int64_t t, int64_t hd) { return size_t(4 * hd + 2 * t) * sizeof(float); }

Dims check(const char* op, int64_t b, int64_t t, int64_t h, int64_t kv, int64_t hd) {
  if (kv <= 0 || h % kv != 0) throw std::invalid_argument(std::string(op) + ": heads must be a multiple of kv heads");
  if (t > attention_max_seq(hd) || b > 65535 || h > 65535)
    throw std::invalid_argument(std::string(op) + ": sequence " + std::to_string(t) + " with head dim " +
                                std::to_string(hd) + " exceeds the simple kernel's shared memory");
  return Dims{t, h, kv, hd, 1.0f / sqrtf(float(hd))};
}

}  // namespace

int64_t attention_max_seq(int64_t hd) { return int64_t(kSmemLimit / sizeof(float)) / 2 - 2 * hd; }

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, float* lse, int64_t b, int64_t t, int64_t h,
                       int64_t kv, int64_t hd, cudaStream_t s) {
  if (b * t * h * hd == 0) return;
  const Dims m = check("attention_forward", b, t, h, kv, hd);
  SY_LAUNCH(dim3(unsigned(t), unsigned(h), unsigned(b)), kThreads, fwd_smem(t, hd), s, attn_fwd_kernel<T>)(
      q, k, v, out, lse, m);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const float* lse, T* dq, T* dk,
                        T* dv, int64_t b, int64_t t, int64_t h, int64_t kv, int64_t hd, cudaStream_t s) {
  if (b * t * h * hd == 0) return;
  const Dims m = check("attention_backward", b, t, h, kv, hd);
  SY_LAUNCH(dim3(unsigned(t), unsigned(h), unsigned(b)), kThreads, dq_smem(t, hd), s, attn_dq_kernel<T>)(
      dout, q, k, v, out, lse, dq, m);
  SY_CUDA_CHECK(cudaGetLastError());
  SY_LAUNCH(dim3(unsigned(t), unsigned(kv), unsigned(b)), kThreads, dkv_smem(t, hd), s, attn_dkv_kernel<T>)(
      dout, q, k, v, out, lse, dk, dv, m);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE(T)                                                                                       \
  template void attention_forward<T>(const T*, const T*, const T*, T*, float*, int64_t, int64_t, int64_t,       \
                                     int64_t, int64_t, cudaStream_t);                                           \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const float*, T*, T*, \
                                      T*, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
