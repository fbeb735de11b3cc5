// MoE router: scores, top-k selection and its backward, and the router z-loss.
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {

using namespace cpu;

namespace {

template <class T> T row_lse(const T* l, int64_t e) {
  T mx = l[0];
  for (int64_t j = 1; j < e; ++j) mx = l[j] > mx ? l[j] : mx;
  T s = 0;
  for (int64_t j = 0; j < e; ++j) s += vexp(l[j] - mx);
  return mx + std::log(s);
}

}  // namespace

void CpuBackend::router_forward(const Tensor& logits, const Tensor& bias, ScoreFn fn, int k, bool norm_topk,
                                const Tensor& scores, const Tensor& idx, const Tensor& w, RouterGroups grp) {
  const char* op = "router_forward";
  const DType dt = bias.defined() ? check_float(op, {{"logits", logits}, {"bias", bias}, {"scores", scores}, {"w", w}})
                                  : check_float(op, {{"logits", logits}, {"scores", scores}, {"w", w}});
  check_rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1);
  if (k < 1 || k > e) fail(op, "k = " + std::to_string(k) + " outside [1, E] for " + describe({{"logits", logits}}));
  const int64_t g = grp.groups, per = g > 0 ? e / g : 0;
  if (g < 1 || e % g != 0 || grp.top_groups < 1 || grp.top_groups > g || grp.top_groups * per < k)
    fail(op, std::to_string(g) + " groups, top " + std::to_string(grp.top_groups) + " of them, cannot hold k = " +
                 std::to_string(k) + " of E = " + std::to_string(e) + " experts");
  if (bias.defined()) check_shape(op, {"bias", bias}, {e});
  check_shape(op, {"scores", scores}, {n, e});
  check_dtype(op, {"idx", idx}, DType::I32);
  check_shape(op, {"idx", idx}, {n, k});
  check_shape(op, {"w", w}, {n, k});
  dispatch(dt, [&]<class T>(T) {
    const T* l = logits.data<T>();
    const T* b = bias.defined() ? bias.data<T>() : nullptr;
    T *sc = scores.data<T>(), *ws = w.data<T>();
    int32_t* ix = idx.data<int32_t>();
#pragma omp parallel if (worth_threads(n * e * 8))
    {
      std::vector<char> taken(static_cast<size_t>(e)), chosen(static_cast<size_t>(g));
      std::vector<T> gs(static_cast<size_t>(g));  // group scores (group-limited routing)
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T* lr = l + i * e;
        T* s = sc + i * e;
        if (fn == ScoreFn::Softmax) {
          const T lse = row_lse(lr, e);
          for (int64_t j = 0; j < e; ++j) s[j] = vexp(lr[j] - lse);
        } else {
          for (int64_t j = 0; j < e; ++j) s[j] = sigmoid(lr[j]);
        }
        // k passes of a strict-greater argmax: the first (lowest) index wins ties. Experts outside
        // the row's top groups start out taken.
        std::fill(taken.begin(), taken.end(), 0);
        if (g > 1) {
          for (int64_t q = 0; q < g; ++q) {  // the sum of the group's two best (score + bias)
            T b1 = 0, b2 = 0;
            int n_seen = 0;
            for (int64_t x = q * per; x < (q + 1) * per; ++x) {
              const T v = s[x] + (b ? b[x] : T(0));
              if (n_seen == 0 || v > b1) b2 = b1, b1 = v;
              else if (n_seen == 1 || v > b2) b2 = v;
              ++n_seen;
            }
            gs[size_t(q)] = per >= 2 ? b1 + b2 : b1;
          }
          std::fill(chosen.begin(), chosen.end(), 0);
          for (int j = 0; j < grp.top_groups; ++j) {
            int64_t best = -1;
            for (int64_t q = 0; q < g; ++q)
              if (!chosen[size_t(q)] && (best < 0 || gs[size_t(q)] > gs[size_t(best)])) best = q;
            chosen[size_t(best)] = 1;
          }
          for (int64_t x = 0; x < e; ++x) taken[size_t(x)] = !chosen[size_t(x / per)];
        }
        T total = 0;
        for (int j = 0; j < k; ++j) {
          int64_t best = -1;
          T best_v = 0;
          for (int64_t x = 0; x < e; ++x) {
            if (taken[x]) continue;
            const T v = s[x] + (b ? b[x] : T(0));
            if (best < 0 || v > best_v) best = x, best_v = v;
          }
          taken[best] = 1;
          ix[i * k + j] = int32_t(best);
          ws[i * k + j] = s[best];
          total += s[best];
        }
        if (norm_topk)
          for (int j = 0; j < k; ++j) ws[i * k + j] /= total;
      }
    }
  });
}

void CpuBackend::router_backward(const Tensor& dw, const Tensor& aux_coef, const Tensor& logits, const Tensor& scores,
                                 const Tensor& idx, ScoreFn fn, bool norm_topk, const Tensor& dlogits) {
  const char* op = "router_backward";
  const DType dt =
      aux_coef.defined()
          ? check_float(op, {{"dw", dw}, {"aux_coef", aux_coef}, {"logits", logits}, {"scores", scores}, {"dlogits", dlogits}})
          : check_float(op, {{"dw", dw}, {"logits", logits}, {"scores", scores}, {"dlogits", dlogits}});
  check_rank(op, {"logits", logits}, 2);
  check_rank(op, {"idx", idx}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1), k = idx.dim(1);
  check_shape(op, {"scores", scores}, {n, e});
  check_shape(op, {"dlogits", dlogits}, {n, e});
  check_shape(op, {"idx", idx}, {n, k});
  check_shape(op, {"dw", dw}, {n, k});
  if (aux_coef.defined()) check_shape(op, {"aux_coef", aux_coef}, {e});
  check_indices(op, {"idx", idx}, 0, e);
  dispatch(dt, [&]<class T>(T) {
    const T *g_w = dw.data<T>(), *sc = scores.data<T>();
    const T* c = aux_coef.defined() ? aux_coef.data<T>() : nullptr;
    const int32_t* ix = idx.data<int32_t>();
    T* dl = dlogits.data<T>();
#pragma omp parallel if (worth_threads(n * e * 8))
    {
      std::vector<T> g(static_cast<size_t>(e));  // d objective / d scores of one row
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T* s = sc + i * e;
        const int32_t* ir = ix + i * k;
        const T* gw = g_w + i * k;
        std::fill(g.begin(), g.end(), T(0));
        if (norm_topk) {
          // w_j = s_j / S over the selected: dw_j -> (dw_j - sum_i dw_i w_i) / S
          T total = 0, dot = 0;
          for (int64_t j = 0; j < k; ++j) total += s[ir[j]];
          for (int64_t j = 0; j < k; ++j) dot += gw[j] * s[ir[j]];
          dot /= total;
          for (int64_t j = 0; j < k; ++j) g[ir[j]] += (gw[j] - dot) / total;
        } else {
          for (int64_t j = 0; j < k; ++j) g[ir[j]] += gw[j];
        }
        if (c) {
          // p = s / Z: d sum_e c_e p_e / d s_e = (c_e - sum_e' c_e' p_e') / Z
          T z = 0, cp = 0;
          for (int64_t x = 0; x < e; ++x) z += s[x];
          for (int64_t x = 0; x < e; ++x) cp += c[x] * s[x];
          cp /= z;
          for (int64_t x = 0; x < e; ++x) g[x] += (c[x] - cp) / z;
        }
        T* d = dl + i * e;
        if (fn == ScoreFn::Softmax) {
          T gs = 0;
          for (int64_t x = 0; x < e; ++x) gs += g[x] * s[x];
          for (int64_t x = 0; x < e; ++x) d[x] += s[x] * (g[x] - gs);
        } else {
          for (int64_t x = 0; x < e; ++x) d[x] += g[x] * s[x] * (T(1) - s[x]);
        }
      }
    }
  });
}

double CpuBackend::zloss_forward(const Tensor& logits) {
  const char* op = "zloss_forward";
  const DType dt = check_float(op, {{"logits", logits}});
  check_rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1);
  if (e == 0) fail(op, "no experts: " + describe({{"logits", logits}}));
  std::vector<double> row(static_cast<size_t>(n));
  dispatch(dt, [&]<class T>(T) {
    const T* l = logits.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n * e * 8))
    for (int64_t i = 0; i < n; ++i) {
      const double z = double(row_lse(l + i * e, e));
      row[i] = z * z;
    }
  });
  double total = 0;  // in row order: same bits for any thread count
  for (double x : row) total += x;
  return total;
}

void CpuBackend::zloss_backward(const Tensor& logits, double coef, const Tensor& dlogits) {
  const char* op = "zloss_backward";
  const DType dt = check_float(op, {{"logits", logits}, {"dlogits", dlogits}});
  check_rank(op, {"logits", logits}, 2);
  check_shape(op, {"dlogits", dlogits}, logits.shape());
  const int64_t n = logits.dim(0), e = logits.dim(1);
  dispatch(dt, [&]<class T>(T) {
    const T* l = logits.data<T>();
    T* d = dlogits.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n * e * 8))
    for (int64_t i = 0; i < n; ++i) {
      const T* lr = l + i * e;
      const T lse = row_lse(lr, e);
      const T f = T(2 * coef) * lse;
      for (int64_t x = 0; x < e; ++x) d[i * e + x] += f * vexp(lr[x] - lse);
    }
  });
}

}  // namespace sy
