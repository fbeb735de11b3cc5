// SwiGLU activation, cross-entropy loss and the AdamW update.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {
namespace cpu {

template <class T> void swiglu_rows(const T* h, T* out, int64_t rows, int64_t f, const Backend::GluOpts& glu) {
  const T alpha = T(glu.alpha), lim = T(glu.limit);
#pragma omp parallel for schedule(static) if (worth_threads(rows * f))
  for (int64_t i = 0; i < rows; ++i) {
    const T *gate = h + i * 2 * f, *up = gate + f;
    T* o = out + i * f;
    if (!glu.clamped()) {
      SY_SIMD16
      for (int64_t j = 0; j < f; ++j) o[j] = gate[j] * sigmoid(gate[j]) * up[j];
    } else {
      SY_SIMD16
      for (int64_t j = 0; j < f; ++j) {
        const T g = std::min(gate[j], lim), u = std::clamp(up[j], -lim, lim);
        o[j] = g * sigmoid(alpha * g) * (u + T(1));
      }
    }
  }
}

// One row's gradient; Acc: add into dg, du (else overwrite them, which may hold garbage).
template <bool Acc, class T>
void swiglu_row_backward(const T* gate, const T* up, const T* d, T* dg, T* du, int64_t f, const Backend::GluOpts& glu) {
  auto put = [](T& dst, T v) { dst = Acc ? dst + v : v; };
  if (!glu.clamped()) {
    // silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g)
    SY_SIMD16
    for (int64_t j = 0; j < f; ++j) {
      const T s = sigmoid(gate[j]);
      put(dg[j], d[j] * up[j] * s * (T(1) + gate[j] * (T(1) - s)));
      put(du[j], d[j] * gate[j] * s);
    }
    return;
  }
  // d/dg [g sigmoid(a g)] = s (1 + a g (1 - s)), s = sigmoid(a g); zero where a clamp binds
  // (torch.clamp's convention: the gradient passes at the bound itself).
  const T alpha = T(glu.alpha), lim = T(glu.limit);
  SY_SIMD16
  for (int64_t j = 0; j < f; ++j) {
    const T g = std::min(gate[j], lim), u = std::clamp(up[j], -lim, lim), s = sigmoid(alpha * g);
    const T pass_g = gate[j] <= lim ? T(1) : T(0), pass_u = up[j] >= -lim && up[j] <= lim ? T(1) : T(0);
    put(dg[j], pass_g * d[j] * (u + T(1)) * s * (T(1) + alpha * g * (T(1) - s)));
    put(du[j], pass_u * d[j] * g * s);
  }
}

template <class T>
void swiglu_rows_backward(const T* dout, const T* h, T* dh, int64_t rows, int64_t f, bool accumulate,
                          const Backend::GluOpts& glu) {
#pragma omp parallel for schedule(static) if (worth_threads(rows * f))
  for (int64_t i = 0; i < rows; ++i) {
    const T *gate = h + i * 2 * f, *up = gate + f, *d = dout + i * f;
    T *dg = dh + i * 2 * f, *du = dg + f;
    if (accumulate) swiglu_row_backward<true>(gate, up, d, dg, du, f, glu);
    else swiglu_row_backward<false>(gate, up, d, dg, du, f, glu);
  }
}

void check_glu(const char* op, const Backend::GluOpts& glu) {
  if (!(glu.limit >= 0) || !std::isfinite(glu.alpha) || (!glu.clamped() && glu.alpha != 1.0))
    fail(op, "GluOpts needs limit >= 0 and, for the plain SwiGLU (limit 0), alpha 1");
}

template void swiglu_rows<float>(const float*, float*, int64_t, int64_t, const Backend::GluOpts&);
template void swiglu_rows<double>(const double*, double*, int64_t, int64_t, const Backend::GluOpts&);
template void swiglu_rows_backward<float>(const float*, const float*, float*, int64_t, int64_t, bool,
                                          const Backend::GluOpts&);
template void swiglu_rows_backward<double>(const double*, const double*, double*, int64_t, int64_t, bool,
                                           const Backend::GluOpts&);

}  // namespace cpu

using namespace cpu;

void CpuBackend::swiglu_forward(const Tensor& h, const Tensor& out, const GluOpts& glu) {
  const char* op = "swiglu_forward";
  const DType dt = check_float(op, {{"h", h}, {"out", out}});
  check_rank(op, {"h", h}, 2);
  const int64_t n = h.dim(0), f = h.dim(1) / 2;
  if (h.dim(1) % 2) fail(op, "odd gate|up width: " + describe({{"h", h}}));
  check_shape(op, {"out", out}, {n, f});
  check_glu(op, glu);
  dispatch(dt, [&]<class T>(T) { swiglu_rows(h.data<T>(), out.data<T>(), n, f, glu); });
}

void CpuBackend::swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh, const GluOpts& glu) {
  const char* op = "swiglu_backward";
  const DType dt = check_float(op, {{"dout", dout}, {"h", h}, {"dh", dh}});
  check_rank(op, {"h", h}, 2);
  const int64_t n = h.dim(0), f = h.dim(1) / 2;
  if (h.dim(1) % 2) fail(op, "odd gate|up width: " + describe({{"h", h}}));
  check_shape(op, {"dout", dout}, {n, f});
  check_shape(op, {"dh", dh}, {n, 2 * f});
  check_glu(op, glu);
  dispatch(dt, [&]<class T>(T) { swiglu_rows_backward(dout.data<T>(), h.data<T>(), dh.data<T>(), n, f, true, glu); });
}

namespace {

void check_ce(const char* op, const Tensor& logits, const Tensor& targets, const Tensor& lse, bool allow_negative = false) {
  check_rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0);
  check_shape(op, {"targets", targets}, {n});
  check_shape(op, {"lse", lse}, {n});
  check_indices(op, {"targets", targets}, 0, logits.dim(1), allow_negative);
}

}  // namespace

double CpuBackend::cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& lse) {
  const char* op = "cross_entropy_forward";
  const DType dt = check_float(op, {{"logits", logits}, {"lse", lse}});
  check_ce(op, logits, targets, lse);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  if (v == 0) fail(op, "empty vocabulary: " + describe({{"logits", logits}}));
  const int32_t* tg = targets.data<int32_t>();
  std::vector<double> row_loss(static_cast<size_t>(n));
  dispatch(dt, [&]<class T>(T) {
    const T* l = logits.data<T>();
    T* ls = lse.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n * v))
    for (int64_t i = 0; i < n; ++i) {
      const T* r = l + i * v;
      T mx = r[0];
      SY_SIMD16_MAX(mx)
      for (int64_t j = 0; j < v; ++j) mx = r[j] > mx ? r[j] : mx;
      T s = 0;
      SY_SIMD16_SUM(s)
      for (int64_t j = 0; j < v; ++j) s += vexp(r[j] - mx);
      const T lse_i = mx + std::log(s);
      ls[i] = lse_i;
      row_loss[i] = double(lse_i) - double(r[tg[i]]);
    }
  });
  // Summed in row order on one thread: the loss is the same bits for any thread count.
  double total = 0;
  for (double x : row_loss) total += x;
  return total;
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double scale,
                                        const Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  const DType dt = check_float(op, {{"logits", logits}, {"lse", lse}, {"dlogits", dlogits}});
  check_ce(op, logits, targets, lse, true);
  check_shape(op, {"dlogits", dlogits}, logits.shape());
  const int64_t n = logits.dim(0), v = logits.dim(1);
  const int32_t* tg = targets.data<int32_t>();
  dispatch(dt, [&]<class T>(T) {
    const T *l = logits.data<T>(), *ls = lse.data<T>();
    T* dl = dlogits.data<T>();
    const T sc = T(scale);
#pragma omp parallel for schedule(static) if (worth_threads(n * v))
    for (int64_t i = 0; i < n; ++i) {
      const T* r = l + i * v;
      T* d = dl + i * v;
      const T m = ls[i];
      SY_SIMD16
      for (int64_t j = 0; j < v; ++j) d[j] += sc * vexp(r[j] - m);
      if (tg[i] >= 0) d[tg[i]] -= sc;
    }
  });
}

void CpuBackend::logits_row_max(const Tensor& logits, const Tensor& row_max) {
  const char* op = "logits_row_max";
  const DType dt = check_float(op, {{"logits", logits}, {"row_max", row_max}});
  check_rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  check_shape(op, {"row_max", row_max}, {n});
  if (v == 0) fail(op, "empty vocabulary shard: " + describe({{"logits", logits}}));
  dispatch(dt, [&]<class T>(T) {
    const T* l = logits.data<T>();
    T* out = row_max.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n * v))
    for (int64_t i = 0; i < n; ++i) {
      const T* r = l + i * v;
      T mx = r[0];
      SY_SIMD16_MAX(mx)
      for (int64_t j = 0; j < v; ++j) mx = r[j] > mx ? r[j] : mx;
      out[i] = mx;
    }
  });
}

void CpuBackend::cross_entropy_shard_sums(const Tensor& logits, const Tensor& targets, const Tensor& global_max,
                                          const Tensor& sum_exp, const Tensor& target_logit) {
  const char* op = "cross_entropy_shard_sums";
  const DType dt = check_float(
      op, {{"logits", logits}, {"global_max", global_max}, {"sum_exp", sum_exp}, {"target_logit", target_logit}});
  check_ce(op, logits, targets, global_max, true);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  check_shape(op, {"sum_exp", sum_exp}, {n});
  check_shape(op, {"target_logit", target_logit}, {n});
  const int32_t* tg = targets.data<int32_t>();
  dispatch(dt, [&]<class T>(T) {
    const T *l = logits.data<T>(), *mx = global_max.data<T>();
    T *se = sum_exp.data<T>(), *tl = target_logit.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n * v))
    for (int64_t i = 0; i < n; ++i) {
      const T* r = l + i * v;
      const T m = mx[i];
      T s = 0;
      SY_SIMD16_SUM(s)
      for (int64_t j = 0; j < v; ++j) s += vexp(r[j] - m);
      se[i] = s;
      tl[i] = tg[i] >= 0 ? r[tg[i]] : T(0);
    }
  });
}

void CpuBackend::adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                              const AdamWArgs& args) {
  const char* op = "adamw_update";
  const DType dt = check_float(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}});
  const int64_t n = param.numel();
  check_numel(op, {"grad", grad}, n);
  check_numel(op, {"m", m}, n);
  check_numel(op, {"v", v}, n);
  if (args.step < 1) fail(op, "step must count from 1, got " + std::to_string(args.step));
  const double bc1 = 1 - std::pow(args.beta1, double(args.step)), bc2 = 1 - std::pow(args.beta2, double(args.step));
  dispatch(dt, [&]<class T>(T) {
    T *p = param.data<T>(), *ms = m.data<T>(), *vs = v.data<T>();
    const T* g = grad.data<T>();
    const T b1 = T(args.beta1), b2 = T(args.beta2), ib1 = T(1 - args.beta1), ib2 = T(1 - args.beta2);
    const T rbc1 = T(1 / bc1), rbc2 = T(1 / bc2), lr = T(args.lr), wd = T(args.weight_decay), eps = T(args.eps);
    const T gs = T(args.grad_scale);
#pragma omp parallel for simd schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) {
      const T gi = gs * g[i];
      const T mi = b1 * ms[i] + ib1 * gi;
      const T vi = b2 * vs[i] + ib2 * gi * gi;
      ms[i] = mi;
      vs[i] = vi;
      p[i] -= lr * (wd * p[i] + (mi * rbc1) / (std::sqrt(vi * rbc2) + eps));
    }
  });
}

}  // namespace sy
