// Rotary position embedding and causal grouped-query attention.
//
// Attention works on blocks of kBlock query rows: a block only multiplies against the keys at or
// before its last row, which skips the fully masked upper blocks (about 44% of the work at
// T = 256). Scores of one block live in a small per-thread buffer; the forward pass keeps only the
// per-row log-sum-exp, and the backward pass recomputes the probabilities from it.
#include <algorithm>
#include <cmath>
#include <limits>
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
  int64_t b, t, h, kv, hd, hv;
  int64_t window;  // 0: every earlier key
  double scale;
};

AttnDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse, const Backend::AttentionOpts& opts) {
  const DType dt = check_float(op, {{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}});
  if (opts.sinks.defined()) check_dtype(op, {"sinks", opts.sinks}, dt);
  check_rank(op, {"q", q}, 4);
  check_rank(op, {"k", k}, 4);
  check_rank(op, {"v", v}, 4);
  AttnDims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), v.dim(3), opts.window, opts.scale};
  if (d.kv == 0 || d.h % d.kv != 0)
    fail(op, "query heads must be a multiple of kv heads: " + describe({{"q", q}, {"k", k}}));
  if (opts.window < 0) fail(op, "window must be >= 0 (0: no sliding window), got " + std::to_string(opts.window));
  if (!(opts.scale >= 0)) fail(op, "scale must be >= 0 (0: 1/sqrt(head_dim))");
  if (d.scale == 0) d.scale = 1.0 / std::sqrt(double(d.hd));
  check_shape(op, {"k", k}, {d.b, d.t, d.kv, d.hd});
  check_shape(op, {"v", v}, {d.b, d.t, d.kv, d.hv});
  check_shape(op, {"out", out}, {d.b, d.t, d.h, d.hv});
  check_shape(op, {"lse", lse}, {d.b, d.h, d.t});
  if (opts.sinks.defined()) check_shape(op, {"sinks", opts.sinks}, {d.h});
  return d;
}

// The keys a block of query rows [r0, r0 + rows) reads: [first, r0 + rows), first > 0 only under a
// sliding window (the oldest key the block's first row still sees).
int64_t first_key(const AttnDims& d, int64_t r0) { return d.window > 0 ? std::max<int64_t>(0, r0 - d.window + 1) : 0; }

// Row i of a score block (query t = r0 + i, keys [k0, kend)) may not see keys after t, nor, under
// a sliding window, keys at or before t - window: setting those scores to -inf before the softmax
// lets every row loop run over whole, unmasked lengths (a per-element mask condition makes GCC
// split the loop and give up vectorising it).
template <class T> void mask_block(T* s, int64_t rows, int64_t r0, int64_t k0, int64_t kend, int64_t window, T inf) {
  const int64_t len = kend - k0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t t = r0 + i;
    for (int64_t j = t + 1 - k0; j < len; ++j) s[i * len + j] = -inf;
    if (window > 0)
      for (int64_t j = 0; j < std::min(len, t - window + 1 - k0); ++j) s[i * len + j] = -inf;
  }
}

// The query heads of one GQA group share their keys and values, so a block works on all of them
// at once: their rows are packed head-major into one [group * rows, hd] matrix, which makes every
// GEMM `group` times taller and `group` times fewer (small GEMMs are dominated by call overhead).
// Packed row r is query position r0 + r % rows of head g * group + r / rows.
template <class T>
void pack_rows(const T* src, int64_t ld, int64_t group, int64_t rows, int64_t hd, T* dst) {
  for (int64_t gh = 0; gh < group; ++gh)
    for (int64_t i = 0; i < rows; ++i) std::copy_n(src + i * ld + gh * hd, hd, dst + (gh * rows + i) * hd);
}

template <class T>
void attention_fwd(const AttnDims& d, const T* q, const T* k, const T* v, const T* sinks, T* o, T* lse) {
  const int64_t tt = d.t, hd = d.hd, hv = d.hv, group = d.h / d.kv, ldq = d.h * hd, ldk = d.kv * hd;
  const int64_t ldv = d.kv * hv, ldo = d.h * hv;
  const int64_t blocks = (tt + kBlock - 1) / kBlock, tall = group * kBlock;
  const T scale = T(d.scale), kInf = std::numeric_limits<T>::infinity();
#pragma omp parallel if (d.b * d.h * tt * tt * hd > (1 << 18))
  {
    std::vector<T> sbuf(static_cast<size_t>(tall * tt + 64)), qbuf(static_cast<size_t>(tall * hd)),
        obuf(static_cast<size_t>(tall * hv)), inv(static_cast<size_t>(tall));
    T *s = align64(sbuf.data()), *qpk = qbuf.data(), *opk = obuf.data();
    // Later query blocks cost more (more keys): hand them out first so dynamic scheduling evens out.
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < d.b; ++b)
      for (int64_t g = 0; g < d.kv; ++g)
        for (int64_t rb = 0; rb < blocks; ++rb) {
          const int64_t r0 = (blocks - 1 - rb) * kBlock, rows = std::min(kBlock, tt - r0), kend = r0 + rows;
          const int64_t k0 = first_key(d, r0), len = kend - k0;
          const int64_t gr = group * rows, h0 = g * group;
          const T* kp = k + (b * tt + k0) * ldk + g * hd;
          const T* vp = v + (b * tt + k0) * ldv + g * hv;
          pack_rows(q + (b * tt + r0) * ldq + h0 * hd, ldq, group, rows, hd, qpk);
          gemm_raw(false, true, gr, len, hd, scale, qpk, hd, kp, ldk, T(0), s, len);
          for (int64_t gh = 0; gh < group; ++gh) mask_block(s + gh * rows * len, rows, r0, k0, kend, d.window, kInf);
          for (int64_t r = 0; r < gr; ++r) {
            T* sr = s + r * len;
            const T sink = sinks ? sinks[h0 + r / rows] : -kInf;
            T mx = sink;
            SY_SIMD16_MAX(mx)
            for (int64_t j = 0; j < len; ++j) mx = sr[j] > mx ? sr[j] : mx;
            T sum = sinks ? std::exp(sink - mx) : T(0);
            SY_SIMD16_SUM(sum)
            for (int64_t j = 0; j < len; ++j) {
              const T p = vexp(sr[j] - mx);
              sr[j] = p;
              sum += p;
            }
            lse[(b * d.h + h0 + r / rows) * tt + r0 + r % rows] = mx + std::log(sum);
            inv[r] = T(1) / sum;
          }
          gemm_raw(false, false, gr, hv, len, T(1), s, len, vp, ldv, T(0), opk, hv);
          // Normalising the [rows, hv] output is cheaper than normalising the [rows, len] weights.
          for (int64_t r = 0; r < gr; ++r) {
            T* orow = o + (b * tt + r0 + r % rows) * ldo + (h0 + r / rows) * hv;
            const T* prow = opk + r * hv;
            const T f = inv[r];
#pragma omp simd
            for (int64_t c = 0; c < hv; ++c) orow[c] = prow[c] * f;
          }
        }
  }
}

template <class T>
void attention_bwd(const AttnDims& d, const T* dout, const T* q, const T* k, const T* v, const T* o, const T* lse,
                   const T* sinks, T* dq, T* dk, T* dv, T* dsinks) {
  const int64_t tt = d.t, hd = d.hd, hv = d.hv, group = d.h / d.kv, ldq = d.h * hd, ldk = d.kv * hd;
  const int64_t ldv = d.kv * hv, ldo = d.h * hv;
  const int64_t blocks = (tt + kBlock - 1) / kBlock, tall = group * kBlock;
  const T scale = T(d.scale), kInf = std::numeric_limits<T>::infinity();
  // Per (batch, kv head) partial sums of the sinks' gradients, added in a fixed order afterwards
  // so the result does not depend on the thread schedule.
  std::vector<double> dsink_part(sinks ? static_cast<size_t>(d.b * d.h) : 0, 0.0);
#pragma omp parallel if (d.b * d.h * tt * tt * hd > (1 << 18))
  {
    std::vector<T> pbuf(static_cast<size_t>(tall * tt + 64)), dpbuf(static_cast<size_t>(tall * tt + 64)),
        qbuf(static_cast<size_t>(tall * hd)), dobuf(static_cast<size_t>(tall * hv)),
        dqbuf(static_cast<size_t>(tall * hd)), dibuf(static_cast<size_t>(group * tt));
    T *p = align64(pbuf.data()), *dp = align64(dpbuf.data()), *qpk = qbuf.data(), *dopk = dobuf.data(),
      *dqpk = dqbuf.data(), *di = dibuf.data();
    // One task per (batch, kv head): dk and dv of a kv head are written by its task alone.
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < d.b; ++b)
      for (int64_t g = 0; g < d.kv; ++g) {
        const int64_t h0 = g * group;
        // rowsum(dO * O): the softmax backward's per-row term, shared by every key.
        for (int64_t gh = 0; gh < group; ++gh)
          for (int64_t t = 0; t < tt; ++t) {
            const int64_t at = (b * tt + t) * ldo + (h0 + gh) * hv;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < hv; ++j) s += dout[at + j] * o[at + j];
            di[gh * tt + t] = s;
          }
        if (sinks)  // the sink has score sinks[h] and value 0: d sink = -p_sink * rowsum(dO * O)
          for (int64_t gh = 0; gh < group; ++gh) {
            double acc = 0;
            for (int64_t t = 0; t < tt; ++t)
              acc -= std::exp(double(sinks[h0 + gh]) - double(lse[(b * d.h + h0 + gh) * tt + t])) * di[gh * tt + t];
            dsink_part[b * d.h + h0 + gh] = acc;
          }
        for (int64_t rb = 0; rb < blocks; ++rb) {
          const int64_t r0 = rb * kBlock, rows = std::min(kBlock, tt - r0), kend = r0 + rows, gr = group * rows;
          const int64_t k0 = first_key(d, r0), len = kend - k0;
          const T* kp = k + (b * tt + k0) * ldk + g * hd;
          const T* vp = v + (b * tt + k0) * ldv + g * hv;
          T* dkp = dk + (b * tt + k0) * ldk + g * hd;
          T* dvp = dv + (b * tt + k0) * ldv + g * hv;
          pack_rows(q + (b * tt + r0) * ldq + h0 * hd, ldq, group, rows, hd, qpk);
          pack_rows(dout + (b * tt + r0) * ldo + h0 * hv, ldo, group, rows, hv, dopk);
          gemm_raw(false, true, gr, len, hd, scale, qpk, hd, kp, ldk, T(0), p, len);
          gemm_raw(false, true, gr, len, hv, T(1), dopk, hv, vp, ldv, T(0), dp, len);
          for (int64_t gh = 0; gh < group; ++gh) mask_block(p + gh * rows * len, rows, r0, k0, kend, d.window, kInf);
          for (int64_t r = 0; r < gr; ++r) {
            T *pr = p + r * len, *dpr = dp + r * len;
            const int64_t gh = r / rows, t = r0 + r % rows;
            const T l = lse[(b * d.h + h0 + gh) * tt + t], dii = di[gh * tt + t];
            SY_SIMD16
            for (int64_t j = 0; j < len; ++j) {
              const T pj = vexp(pr[j] - l);
              pr[j] = pj;
              dpr[j] = pj * (dpr[j] - dii) * scale;  // dS, with the score scale folded in
            }
          }
          // The packed K dimension (group * rows) sums the group's heads into dv and dk directly.
          gemm_raw(true, false, len, hv, gr, T(1), p, len, dopk, hv, T(1), dvp, ldv);
          gemm_raw(true, false, len, hd, gr, T(1), dp, len, qpk, hd, T(1), dkp, ldk);
          gemm_raw(false, false, gr, hd, len, T(1), dp, len, kp, ldk, T(0), dqpk, hd);
          for (int64_t r = 0; r < gr; ++r) {
            T* dqrow = dq + (b * tt + r0 + r % rows) * ldq + (h0 + r / rows) * hd;
            const T* src = dqpk + r * hd;
#pragma omp simd
            for (int64_t c = 0; c < hd; ++c) dqrow[c] += src[c];
          }
        }
      }
  }
  if (sinks)
    for (int64_t h = 0; h < d.h; ++h) {
      double acc = 0;
      for (int64_t b = 0; b < d.b; ++b) acc += dsink_part[b * d.h + h];
      dsinks[h] += T(acc);
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
                                   const Tensor& lse, const AttentionOpts& opts) {
  const AttnDims d = check_attention("attention_forward", q, k, v, out, lse, opts);
  if (d.b * d.t * d.h == 0) return;
  dispatch(q.dtype(), [&]<class T>(T) {
    attention_fwd(d, q.data<T>(), k.data<T>(), v.data<T>(), opts.sinks.defined() ? opts.sinks.data<T>() : nullptr,
                  out.data<T>(), lse.data<T>());
  });
}

void CpuBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                    const Tensor& dv, const AttentionOpts& opts, const Tensor& dsinks) {
  const char* op = "attention_backward";
  const AttnDims d = check_attention(op, q, k, v, out, lse, opts);
  check_float(op, {{"q", q}, {"dout", dout}, {"dq", dq}, {"dk", dk}, {"dv", dv}});
  if (dsinks.defined()) check_dtype(op, {"dsinks", dsinks}, q.dtype());
  check_shape(op, {"dout", dout}, out.shape());
  check_shape(op, {"dq", dq}, q.shape());
  check_shape(op, {"dk", dk}, k.shape());
  check_shape(op, {"dv", dv}, v.shape());
  if (opts.sinks.defined() != dsinks.defined())
    fail(op, "dsinks must be given exactly when sinks are: " + describe({{"sinks", opts.sinks}, {"dsinks", dsinks}}));
  if (dsinks.defined()) check_shape(op, {"dsinks", dsinks}, {d.h});
  if (d.b * d.t * d.h == 0) return;
  dispatch(q.dtype(), [&]<class T>(T) {
    const bool sk = opts.sinks.defined();
    attention_bwd(d, dout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>(),
                  sk ? opts.sinks.data<T>() : nullptr, dq.data<T>(), dk.data<T>(), dv.data<T>(),
                  sk ? dsinks.data<T>() : nullptr);
  });
}

}  // namespace sy
