// Rotary position embedding and causal grouped-query attention.
//
// Attention works on blocks of kBlock query rows: a block only multiplies against the keys at or
// before its last row, which skips the fully masked upper blocks (about 44% of the work at
// T = 256). Scores of one block live in a small per-thread buffer; the forward pass keeps only the
// per-row log-sum-exp, and the backward pass recomputes the probabilities from it.
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {

using namespace cpu;

namespace {

constexpr int64_t kBlock = 32;

void check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                const Tensor& y) {
  check_float(op, {{"x", x}, {"cos", cos}, {"sin", sin}, {"y", y}});
  check_rank(op, {"x", x}, 3);
  const int64_t n = x.dim(0), hd = x.dim(2);
  if (hd % 2) fail(op, "odd head dim: " + describe({{"x", x}}));
  check_shape(op, {"y", y}, x.shape());
  check_shape(op, {"positions", positions}, {n});
  check_rank(op, {"cos", cos}, 2);
  check_shape(op, {"cos", cos}, {cos.dim(0), hd / 2});
  check_shape(op, {"sin", sin}, cos.shape());
  check_indices(op, {"positions", positions}, 0, cos.dim(0));
}

// y = R(pos) x (forward) or dx += R(pos)^T dy (backward) for each row pair (i, i + hd/2).
template <class T>
void rope_apply(const T* x, const int32_t* pos, const T* cs, const T* sn, T* y, int64_t n, int64_t h, int64_t hd,
                bool backward) {
  const int64_t half = hd / 2;
#pragma omp parallel for schedule(static) if (worth_threads(n * h * hd))
  for (int64_t i = 0; i < n; ++i) {
    const T *c = cs + pos[i] * half, *s = sn + pos[i] * half;
    for (int64_t hh = 0; hh < h; ++hh) {
      const T* xr = x + (i * h + hh) * hd;
      T* yr = y + (i * h + hh) * hd;
      if (!backward) {
#pragma omp simd
        for (int64_t j = 0; j < half; ++j) {
          const T a = xr[j], b = xr[j + half];  // read both first: y may alias x
          yr[j] = a * c[j] - b * s[j];
          yr[j + half] = b * c[j] + a * s[j];
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < half; ++j) {
          const T a = xr[j], b = xr[j + half];
          yr[j] += a * c[j] + b * s[j];
          yr[j + half] += b * c[j] - a * s[j];
        }
      }
    }
  }
}

struct AttnDims {
  int64_t b, t, h, kv, hd;
};

AttnDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse) {
  check_float(op, {{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}});
  check_rank(op, {"q", q}, 4);
  check_rank(op, {"k", k}, 4);
  const AttnDims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3)};
  if (d.kv == 0 || d.h % d.kv != 0)
    fail(op, "query heads must be a multiple of kv heads: " + describe({{"q", q}, {"k", k}}));
  check_shape(op, {"k", k}, {d.b, d.t, d.kv, d.hd});
  check_shape(op, {"v", v}, {d.b, d.t, d.kv, d.hd});
  check_shape(op, {"out", out}, q.shape());
  check_shape(op, {"lse", lse}, {d.b, d.h, d.t});
  return d;
}

template <class T> void attention_fwd(const AttnDims& d, const T* q, const T* k, const T* v, T* o, T* lse) {
  const int64_t tt = d.t, hd = d.hd, group = d.h / d.kv, ldq = d.h * hd, ldk = d.kv * hd;
  const int64_t blocks = (tt + kBlock - 1) / kBlock;
  const T scale = T(1) / std::sqrt(T(hd));
#pragma omp parallel
  {
    std::vector<T> sbuf(static_cast<size_t>(kBlock * tt));
    T* s = sbuf.data();
    T inv[kBlock];
    // Later query blocks cost more (more keys): hand them out first so dynamic scheduling evens out.
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < d.b; ++b)
      for (int64_t h = 0; h < d.h; ++h)
        for (int64_t rb = 0; rb < blocks; ++rb) {
          const int64_t r0 = (blocks - 1 - rb) * kBlock, rows = std::min(kBlock, tt - r0), kend = r0 + rows;
          const T* qp = q + (b * tt + r0) * ldq + h * hd;
          const T* kp = k + b * tt * ldk + (h / group) * hd;
          const T* vp = v + b * tt * ldk + (h / group) * hd;
          T* op = o + (b * tt + r0) * ldq + h * hd;
          T* lp = lse + (b * d.h + h) * tt + r0;
          gemm_raw(false, true, rows, kend, hd, scale, qp, ldq, kp, ldk, T(0), s, kend);
          for (int64_t i = 0; i < rows; ++i) {
            T* sr = s + i * kend;
            const int64_t valid = r0 + i + 1;
            T mx = sr[0];
            SY_SIMD16_MAX(mx)
            for (int64_t j = 0; j < valid; ++j) mx = sr[j] > mx ? sr[j] : mx;
            T sum = 0;
            SY_SIMD16_SUM(sum)
            for (int64_t j = 0; j < valid; ++j) {
              const T p = vexp(sr[j] - mx);
              sr[j] = p;
              sum += p;
            }
            for (int64_t j = valid; j < kend; ++j) sr[j] = 0;
            lp[i] = mx + std::log(sum);
            inv[i] = T(1) / sum;
          }
          gemm_raw(false, false, rows, hd, kend, T(1), s, kend, vp, ldk, T(0), op, ldq);
          // Normalising the [rows, hd] output is cheaper than normalising the [rows, kend] weights.
          for (int64_t i = 0; i < rows; ++i) {
            T* orow = op + i * ldq;
#pragma omp simd
            for (int64_t c = 0; c < hd; ++c) orow[c] *= inv[i];
          }
        }
  }
}

template <class T>
void attention_bwd(const AttnDims& d, const T* dout, const T* q, const T* k, const T* v, const T* o, const T* lse,
                   T* dq, T* dk, T* dv) {
  const int64_t tt = d.t, hd = d.hd, group = d.h / d.kv, ldq = d.h * hd, ldk = d.kv * hd;
  const int64_t blocks = (tt + kBlock - 1) / kBlock;
  const T scale = T(1) / std::sqrt(T(hd));
#pragma omp parallel
  {
    std::vector<T> pbuf(static_cast<size_t>(kBlock * tt)), dpbuf(static_cast<size_t>(kBlock * tt)),
        dibuf(static_cast<size_t>(tt));
    T *p = pbuf.data(), *dp = dpbuf.data(), *di = dibuf.data();
    // One task per (batch, kv head): dk and dv of a kv head are written by its task alone.
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < d.b; ++b)
      for (int64_t g = 0; g < d.kv; ++g) {
        const T* kp = k + b * tt * ldk + g * hd;
        const T* vp = v + b * tt * ldk + g * hd;
        T* dkp = dk + b * tt * ldk + g * hd;
        T* dvp = dv + b * tt * ldk + g * hd;
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const int64_t base = b * tt * ldq + h * hd;
          // rowsum(dO * O): the softmax backward's per-row term, shared by every key.
          for (int64_t t = 0; t < tt; ++t) {
            const T *a = dout + base + t * ldq, *c = o + base + t * ldq;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < hd; ++j) s += a[j] * c[j];
            di[t] = s;
          }
          const T* lp = lse + (b * d.h + h) * tt;
          for (int64_t rb = 0; rb < blocks; ++rb) {
            const int64_t r0 = rb * kBlock, rows = std::min(kBlock, tt - r0), kend = r0 + rows;
            const T* qp = q + base + r0 * ldq;
            const T* dop = dout + base + r0 * ldq;
            T* dqp = dq + base + r0 * ldq;
            gemm_raw(false, true, rows, kend, hd, scale, qp, ldq, kp, ldk, T(0), p, kend);
            gemm_raw(false, true, rows, kend, hd, T(1), dop, ldq, vp, ldk, T(0), dp, kend);
            for (int64_t i = 0; i < rows; ++i) {
              T *pr = p + i * kend, *dpr = dp + i * kend;
              const int64_t valid = r0 + i + 1;
              const T l = lp[r0 + i], dii = di[r0 + i];
              SY_SIMD16
              for (int64_t j = 0; j < valid; ++j) {
                const T pj = vexp(pr[j] - l);
                pr[j] = pj;
                dpr[j] = pj * (dpr[j] - dii) * scale;  // dS, with the score scale folded in
              }
              for (int64_t j = valid; j < kend; ++j) pr[j] = dpr[j] = 0;
            }
            gemm_raw(true, false, kend, hd, rows, T(1), p, kend, dop, ldq, T(1), dvp, ldk);
            gemm_raw(false, false, rows, hd, kend, T(1), dp, kend, kp, ldk, T(1), dqp, ldq);
            gemm_raw(true, false, kend, hd, rows, T(1), dp, kend, qp, ldq, T(1), dkp, ldk);
          }
        }
      }
  }
}

}  // namespace

void CpuBackend::rope_forward(const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                              const Tensor& y) {
  check_rope("rope_forward", x, positions, cos, sin, y);
  dispatch(x.dtype(), [&]<class T>(T) {
    rope_apply(x.data<T>(), positions.data<int32_t>(), cos.data<T>(), sin.data<T>(), y.data<T>(), x.dim(0), x.dim(1),
               x.dim(2), false);
  });
}

void CpuBackend::rope_backward(const Tensor& dy, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                               const Tensor& dx) {
  check_rope("rope_backward", dy, positions, cos, sin, dx);
  if (dy.raw() == dx.raw()) fail("rope_backward", "dx must not alias dy (it accumulates)");
  dispatch(dy.dtype(), [&]<class T>(T) {
    rope_apply(dy.data<T>(), positions.data<int32_t>(), cos.data<T>(), sin.data<T>(), dx.data<T>(), dy.dim(0),
               dy.dim(1), dy.dim(2), true);
  });
}

void CpuBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                   const Tensor& lse) {
  const AttnDims d = check_attention("attention_forward", q, k, v, out, lse);
  if (d.b * d.t * d.h * d.hd == 0) return;
  dispatch(q.dtype(), [&]<class T>(T) {
    attention_fwd(d, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>());
  });
}

void CpuBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                    const Tensor& dv) {
  const char* op = "attention_backward";
  const AttnDims d = check_attention(op, q, k, v, out, lse);
  check_float(op, {{"q", q}, {"dout", dout}, {"dq", dq}, {"dk", dk}, {"dv", dv}});
  check_shape(op, {"dout", dout}, q.shape());
  check_shape(op, {"dq", dq}, q.shape());
  check_shape(op, {"dk", dk}, k.shape());
  check_shape(op, {"dv", dv}, v.shape());
  if (d.b * d.t * d.h * d.hd == 0) return;
  dispatch(q.dtype(), [&]<class T>(T) {
    attention_bwd(d, dout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>(),
                  dq.data<T>(), dk.data<T>(), dv.data<T>());
  });
}

}  // namespace sy
