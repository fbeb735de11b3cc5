// MoE router: scores, top-k selection and their backward, and the z-loss. One thread per token
// row: a row has tens to a few hundred experts, and the top-k needs no per-row array because each
// pick is the best entry ranked after the previous pick.
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 128;

__device__ float row_lse(const float* l, int64_t e) {
  float mx = l[0];
  for (int64_t j = 1; j < e; ++j) mx = fmaxf(mx, l[j]);
  float s = 0;
  for (int64_t j = 0; j < e; ++j) s += expf(l[j] - mx);
  return mx + logf(s);
}

__global__ void router_fwd_kernel(const float* logits, const float* bias, int sigmoid, int k, int norm_topk,
                                  float* scores, int32_t* idx, float* w, int64_t n, int64_t e, int groups,
                                  int top_groups) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const float* l = logits + row * e;
  float* s = scores + row * e;
  if (sigmoid) {
    for (int64_t x = 0; x < e; ++x) s[x] = 1.0f / (1.0f + expf(-l[x]));
  } else {
    const float lse = row_lse(l, e);
    for (int64_t x = 0; x < e; ++x) s[x] = expf(l[x] - lse);
  }
  // Group-limited routing: a bit per chosen group (the top_groups whose two best score + bias
  // sum highest, ties to the lower group); experts of other groups are not candidates.
  uint64_t chosen = ~uint64_t(0);
  const int64_t per = e / groups;
  if (groups > 1) {
    chosen = 0;
    for (int j = 0; j < top_groups; ++j) {
      int best_g = -1;
      float best_gs = 0;
      for (int q = 0; q < groups; ++q) {
        if (chosen >> q & 1) continue;
        float b1 = 0, b2 = 0;
        for (int64_t x = q * per; x < (q + 1) * per; ++x) {
          const float v = s[x] + (bias ? bias[x] : 0.0f);
          const int64_t seen = x - q * per;
          if (seen == 0 || v > b1) b2 = b1, b1 = v;
          else if (seen == 1 || v > b2) b2 = v;
        }
        const float gs = per >= 2 ? b1 + b2 : b1;
        if (best_g < 0 || gs > best_gs) best_g = q, best_gs = gs;
      }
      chosen |= uint64_t(1) << best_g;
    }
  }
  // Ranking: (score + bias) descending, then expert index ascending (ties to the lower index).
  float prev_v = INFINITY;
  int64_t prev_i = -1;
  float total = 0;
  for (int j = 0; j < k; ++j) {
    int64_t best = -1;
    float best_v = 0;
    for (int64_t x = 0; x < e; ++x) {
      if (groups > 1 && !(chosen >> (x / per) & 1)) continue;
      const float v = s[x] + (bias ? bias[x] : 0.0f);
      const bool after_prev = v < prev_v || (v == prev_v && x > prev_i);
      if (after_prev && (best < 0 || v > best_v)) best = x, best_v = v;
    }
    idx[row * k + j] = int32_t(best);
    w[row * k + j] = s[best];
    total += s[best];
    prev_v = best_v, prev_i = best;
  }
  if (norm_topk)
    for (int j = 0; j < k; ++j) w[row * k + j] /= total;
}

// g[x] = d objective / d score[x] is the selected slots' term plus the aux-loss term; the kernel
// evaluates it per expert on the fly (k is small) instead of keeping a per-row array.
__global__ void router_bwd_kernel(const float* dw, const float* aux, const float* scores, const int32_t* idx,
                                  int sigmoid, int norm_topk, float* dlogits, int64_t n, int64_t e, int k) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const float* s = scores + row * e;
  const int32_t* ir = idx + row * k;
  const float* gw = dw + row * k;
  float total = 0, dot = 0;  // w_j = s_j / total over the selected: dw_j -> (dw_j - sum_i dw_i w_i) / total
  for (int j = 0; j < k; ++j) total += s[ir[j]], dot += gw[j] * s[ir[j]];
  dot /= total;
  float z = 0, cp = 0;  // p = s / z: d sum_e c_e p_e / d s_e = (c_e - sum c p) / z
  if (aux) {
    for (int64_t x = 0; x < e; ++x) z += s[x], cp += aux[x] * s[x];
    cp /= z;
  }
  auto g = [&](int64_t x) {
    float v = 0;
    for (int j = 0; j < k; ++j)
      if (ir[j] == x) v += norm_topk ? (gw[j] - dot) / total : gw[j];
    if (aux) v += (aux[x] - cp) / z;
    return v;
  };
  float* d = dlogits + row * e;
  if (sigmoid) {
    for (int64_t x = 0; x < e; ++x) d[x] += g(x) * s[x] * (1.0f - s[x]);
  } else {
    float gs = 0;
    for (int64_t x = 0; x < e; ++x) gs += g(x) * s[x];
    for (int64_t x = 0; x < e; ++x) d[x] += s[x] * (g(x) - gs);
  }
}

__global__ void zloss_fwd_kernel(const float* logits, float* row_z2, int64_t n, int64_t e) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const float z = row_lse(logits + row * e, e);
  row_z2[row] = z * z;
}

__global__ void zloss_bwd_kernel(const float* logits, float coef, float* dlogits, int64_t n, int64_t e) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const float* l = logits + row * e;
  const float lse = row_lse(l, e), f = 2.0f * coef * lse;
  for (int64_t x = 0; x < e; ++x) dlogits[row * e + x] += f * expf(l[x] - lse);
}

unsigned rows_grid(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

void router_forward(const float* logits, const float* bias, bool sigmoid, int k, bool norm_topk, float* scores,
                    int32_t* idx, float* w, int64_t n, int64_t e, cudaStream_t s, int groups, int top_groups) {
  if (n == 0) return;
  SY_LAUNCH(rows_grid(n), kThreads, 0, s, router_fwd_kernel)(logits, bias, int(sigmoid), k, int(norm_topk), scores,
                                                             idx, w, n, e, groups, top_groups);
  SY_CUDA_CHECK(cudaGetLastError());
}

void router_backward(const float* dw, const float* aux_coef, const float* scores, const int32_t* idx, bool sigmoid,
                     bool norm_topk, float* dlogits, int64_t n, int64_t e, int k, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(rows_grid(n), kThreads, 0, s, router_bwd_kernel)(dw, aux_coef, scores, idx, int(sigmoid), int(norm_topk),
                                                             dlogits, n, e, k);
  SY_CUDA_CHECK(cudaGetLastError());
}

void zloss_forward(const float* logits, float* row_z2, int64_t n, int64_t e, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(rows_grid(n), kThreads, 0, s, zloss_fwd_kernel)(logits, row_z2, n, e);
  SY_CUDA_CHECK(cudaGetLastError());
}

void zloss_backward(const float* logits, float coef, float* dlogits, int64_t n, int64_t e, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(rows_grid(n), kThreads, 0, s, zloss_bwd_kernel)(logits, coef, dlogits, n, e);
  SY_CUDA_CHECK(cudaGetLastError());
}

SY_CUDA_NS_END
}  // namespace sy::cuda
