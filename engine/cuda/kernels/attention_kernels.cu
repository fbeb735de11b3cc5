// Causal grouped-query attention, the simple kernels: the fallback and the reference for the
// fused library path. One block per query row computes that row's scores into shared memory,
// softmax, and the weighted sum of values; the backward recomputes the probabilities from the
// saved log-sum-exp, with dq by query row, dk, dv by key row and the sinks' gradients by head, so
// no two blocks write the same gradient element (no atomics; the same bits on every run).
//
// The options of Backend::AttentionOpts: v's head dim hv may differ from q's and k's hd (every
// loop over a value or output row runs to hv, over a query or key row to hd); a sliding window
// narrows a query's keys to [i - W + 1, i] and a key's queries to [j, j + W - 1], which also bounds
// the shared memory by W rather than t; a sink is one more softmax term exp(sink - lse) with no
// value, so it enters the forward's max and sum and the backward only through lse and dsinks.
#include <cmath>
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
  int64_t t, h, kv, hd, hv, window;
  double scale;
  __device__ int64_t q_at(int64_t b, int64_t i, int64_t head) const { return ((b * t + i) * h + head) * hd; }
  __device__ int64_t o_at(int64_t b, int64_t i, int64_t head) const { return ((b * t + i) * h + head) * hv; }
  __device__ int64_t k_at(int64_t b, int64_t i, int64_t g) const { return ((b * t + i) * kv + g) * hd; }
  __device__ int64_t v_at(int64_t b, int64_t i, int64_t g) const { return ((b * t + i) * kv + g) * hv; }
  // The first key query i sees, and one past the last query that sees key j.
  __device__ int64_t first_key(int64_t i) const { return window > 0 && i >= window ? i - window + 1 : 0; }
  __device__ int64_t end_query(int64_t j) const { return window > 0 && t - j > window ? j + window : t; }
};

// The long sums of these kernels (over the head dimension and over keys or queries) accumulate in
// double: they are the reference the fused path is checked against, and in float their rounding
// alone reaches 1e-5 of the result at a few hundred keys (as the CPU backend's float path does).
// The backward's dP - rowsum(dO O) cancels, so it stays in double too.
template <class T> __device__ double dot_row(const float* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t d = 0; d < n; ++d) s += double(a[d]) * double(to_f32(b[d]));
  return s;
}

template <class T> __device__ double dot_rows(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t d = 0; d < n; ++d) s += double(to_f32(a[d])) * to_f32(b[d]);
  return s;
}

template <class T> __device__ void load_row(const T* src, float* dst, int64_t n) {
  for (int64_t d = threadIdx.x; d < n; d += blockDim.x) dst[d] = to_f32(src[d]);
}

// Block (query i, head, batch): shared memory holds q [hd] then the scores of keys [lo, i].
template <class T>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(const T* q, const T* k, const T* v, const T* sinks, T* out, float* lse, Dims m) {
  const int64_t i = blockIdx.x, head = blockIdx.y, b = blockIdx.z, g = head / (m.h / m.kv);
  const int64_t lo = m.first_key(i), n = i + 1 - lo;
  SY_DYNAMIC_SMEM(float, smem);
  float *qs = smem, *sc = smem + m.hd;
  load_row(q + m.q_at(b, i, head), qs, m.hd);
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const float s = float(dot_row(qs, k + m.k_at(b, lo + r, g), m.hd) * m.scale);
    sc[r] = s;
    mx = fmaxf(mx, s);
  }
  // The sink joins the max, so that a sink far above the scores cannot overflow exp.
  const float sink = sinks ? to_f32(sinks[head]) : -INFINITY;
  mx = fmaxf(block_max(mx), sink);
  float sum = 0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const float p = expf(sc[r] - mx);
    sc[r] = p;
    sum += p;
  }
  sum = block_sum(sum);  // its barriers also publish every thread's sc[] to the loop below
  if (sinks) sum += expf(sink - mx);
  const float inv = 1.0f / sum;
  T* orow = out + m.o_at(b, i, head);
  for (int64_t d = threadIdx.x; d < m.hv; d += blockDim.x) {
    double acc = 0;
    for (int64_t r = 0; r < n; ++r) acc += double(sc[r]) * to_f32(v[m.v_at(b, lo + r, g) + d]);
    orow[d] = from_f32<T>(float(acc) * inv);
  }
  if (threadIdx.x == 0) lse[(b * m.h + head) * m.t + i] = mx + logf(sum);
}

// Block (query i, head, batch): dS_ij = P_ij (dO_i . v_j - dO_i . O_i) * scale, dq_i += sum_j dS_ij k_j.
// Shared memory: q [hd], dO [hv], dS [keys of row i].
template <class T>
__global__ void __launch_bounds__(kThreads) attn_dq_kernel(const T* dout, const T* q, const T* k, const T* v,
                                                           const T* out, const float* lse, T* dq, Dims m) {
  const int64_t i = blockIdx.x, head = blockIdx.y, b = blockIdx.z, g = head / (m.h / m.kv);
  const int64_t lo = m.first_key(i), n = i + 1 - lo;
  SY_DYNAMIC_SMEM(float, smem);
  float *qs = smem, *dos = smem + m.hd, *ds = smem + m.hd + m.hv;
  const int64_t at = m.q_at(b, i, head), ot = m.o_at(b, i, head);
  load_row(q + at, qs, m.hd);
  load_row(dout + ot, dos, m.hv);
  double di = 0;
  for (int64_t d = threadIdx.x; d < m.hv; d += blockDim.x) di += double(to_f32(dout[ot + d])) * to_f32(out[ot + d]);
  di = block_sum(di);  // also publishes qs and dos
  const double l = lse[(b * m.h + head) * m.t + i];
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const double p = exp(dot_row(qs, k + m.k_at(b, lo + r, g), m.hd) * m.scale - l);
    ds[r] = float(p * (dot_row(dos, v + m.v_at(b, lo + r, g), m.hv) - di) * m.scale);
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) {
    double acc = 0;
    for (int64_t r = 0; r < n; ++r) acc += double(ds[r]) * to_f32(k[m.k_at(b, lo + r, g) + d]);
    dq[at + d] = from_f32<T>(to_f32(dq[at + d]) + float(acc));
  }
}

// Block (key j, kv head, batch): over the group's query heads and the queries that see key j,
// dv_j += sum P_ij dO_i and dk_j += sum dS_ij q_i. Shared memory: k_j [hd], v_j [hv], dk [hd],
// dv [hv], then P and dS for those queries.
template <class T>
__global__ void __launch_bounds__(kThreads) attn_dkv_kernel(const T* dout, const T* q, const T* k, const T* v,
                                                            const T* out, const float* lse, T* dk, T* dv, Dims m) {
  const int64_t j = blockIdx.x, g = blockIdx.y, b = blockIdx.z, group = m.h / m.kv, rows = m.end_query(j) - j;
  SY_DYNAMIC_SMEM(float, smem);
  float *ks = smem, *vs = ks + m.hd, *dka = vs + m.hv, *dva = dka + m.hd;
  float *ps = dva + m.hv, *dss = ps + rows;
  const int64_t kat = m.k_at(b, j, g), vat = m.v_at(b, j, g);
  load_row(k + kat, ks, m.hd);
  load_row(v + vat, vs, m.hv);
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) dka[d] = 0;
  for (int64_t d = threadIdx.x; d < m.hv; d += blockDim.x) dva[d] = 0;
  __syncthreads();
  for (int64_t head = g * group; head < (g + 1) * group; ++head) {
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
      const int64_t i = j + r, qa = m.q_at(b, i, head), oa = m.o_at(b, i, head);
      const double di = dot_rows(dout + oa, out + oa, m.hv);
      const double p = exp(dot_row(ks, q + qa, m.hd) * m.scale - lse[(b * m.h + head) * m.t + i]);
      ps[r] = float(p);
      dss[r] = float(p * (dot_row(vs, dout + oa, m.hv) - di) * m.scale);
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) {
      double ak = 0;
      for (int64_t r = 0; r < rows; ++r) ak += double(dss[r]) * to_f32(q[m.q_at(b, j + r, head) + d]);
      dka[d] += float(ak);
    }
    for (int64_t d = threadIdx.x; d < m.hv; d += blockDim.x) {
      double av = 0;
      for (int64_t r = 0; r < rows; ++r) av += double(ps[r]) * to_f32(dout[m.o_at(b, j + r, head) + d]);
      dva[d] += float(av);
    }
    __syncthreads();  // the next head overwrites ps and dss
  }
  for (int64_t d = threadIdx.x; d < m.hd; d += blockDim.x) dk[kat + d] = from_f32<T>(to_f32(dk[kat + d]) + dka[d]);
  for (int64_t d = threadIdx.x; d < m.hv; d += blockDim.x) dv[vat + d] = from_f32<T>(to_f32(dv[vat + d]) + dva[d]);
}

// Block (head): dsinks[h] += -sum over the head's rows (b, i) of exp(sink - lse) * rowsum(dO O).
// Each thread sums a fixed set of rows in double and block_sum adds them in a fixed tree. dsinks
// is float whatever T: the sinks are a parameter, and parameter gradients are the float32
// masters under mixed precision.
template <class T>
__global__ void __launch_bounds__(kThreads) attn_dsink_kernel(const T* dout, const T* out, const float* lse,
                                                              const T* sinks, float* dsinks, int64_t b, Dims m) {
  const int64_t head = blockIdx.x;
  const double sink = to_f32(sinks[head]);
  double acc = 0;
  for (int64_t r = threadIdx.x; r < b * m.t; r += blockDim.x) {
    const int64_t bb = r / m.t, i = r % m.t, oa = m.o_at(bb, i, head);
    acc -= exp(sink - double(lse[(bb * m.h + head) * m.t + i])) * dot_rows(dout + oa, out + oa, m.hv);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) dsinks[head] += float(acc);
}

// The most keys a query row sees (or queries a key row is seen by).
int64_t span(const AttentionDims& d) { return d.window > 0 && d.window < d.t ? d.window : d.t; }
size_t fwd_smem(const AttentionDims& d) { return size_t(d.hd + span(d)) * sizeof(float); }
size_t dq_smem(const AttentionDims& d) { return size_t(d.hd + d.hv + span(d)) * sizeof(float); }
size_t dkv_smem(const AttentionDims& d) { return size_t(2 * d.hd + 2 * d.hv + 2 * span(d)) * sizeof(float); }

Dims check(const char* op, const AttentionDims& d) {
  auto fail = [op](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (d.kv <= 0 || d.h % d.kv != 0) fail("heads must be a multiple of kv heads");
  if (d.window < 0 || !(d.scale >= 0)) fail("window and scale must be >= 0");
  if (span(d) > attention_max_keys(d.hd, d.hv) || d.t > 2147483647 || d.b > 65535 || d.h > 65535)
    fail("sequence " + std::to_string(d.t) + " (window " + std::to_string(d.window) + ") with head dims " +
         std::to_string(d.hd) + "/" + std::to_string(d.hv) + " exceeds the simple kernel's shared memory");
  const double scale = d.scale > 0 ? d.scale : 1.0 / std::sqrt(double(d.hd));
  return Dims{d.t, d.h, d.kv, d.hd, d.hv, d.window, scale};
}

}  // namespace

// The dk/dv kernel's shared memory is the largest: 2 hd + 2 hv + 2 keys floats.
int64_t attention_max_keys(int64_t hd, int64_t hv) { return int64_t(kSmemLimit / sizeof(float)) / 2 - hd - hv; }

template <class T>
void attention_forward(const T* q, const T* k, const T* v, const T* sinks, T* out, float* lse, const AttentionDims& d,
                       cudaStream_t s) {
  const Dims m = check("attention_forward", d);
  if (d.b * d.t * d.h == 0) return;
  SY_LAUNCH(dim3(unsigned(d.t), unsigned(d.h), unsigned(d.b)), kThreads, fwd_smem(d), s, attn_fwd_kernel<T>)(
      q, k, v, sinks, out, lse, m);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const float* lse,
                        const T* sinks, T* dq, T* dk, T* dv, float* dsinks, const AttentionDims& d, cudaStream_t s) {
  const Dims m = check("attention_backward", d);
  if ((sinks == nullptr) != (dsinks == nullptr))
    throw std::invalid_argument("attention_backward: dsinks must be given exactly when sinks are");
  if (d.b * d.t * d.h == 0) return;
  SY_LAUNCH(dim3(unsigned(d.t), unsigned(d.h), unsigned(d.b)), kThreads, dq_smem(d), s, attn_dq_kernel<T>)(
      dout, q, k, v, out, lse, dq, m);
  SY_CUDA_CHECK(cudaGetLastError());
  SY_LAUNCH(dim3(unsigned(d.t), unsigned(d.kv), unsigned(d.b)), kThreads, dkv_smem(d), s, attn_dkv_kernel<T>)(
      dout, q, k, v, out, lse, dk, dv, m);
  SY_CUDA_CHECK(cudaGetLastError());
  if (sinks) {
    SY_LAUNCH(dim3(unsigned(d.h)), kThreads, 0, s, attn_dsink_kernel<T>)(dout, out, lse, sinks, dsinks, d.b, m);
    SY_CUDA_CHECK(cudaGetLastError());
  }
}

#define SY_INSTANTIATE(T)                                                                                         \
  template void attention_forward<T>(const T*, const T*, const T*, const T*, T*, float*, const AttentionDims&,    \
                                     cudaStream_t);                                                               \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const float*, const T*, \
                                      T*, T*, T*, float*, const AttentionDims&, cudaStream_t);
SY_INSTANTIATE(float)
SY_INSTANTIATE(__nv_bfloat16)
#undef SY_INSTANTIATE

SY_CUDA_NS_END
}  // namespace sy::cuda
