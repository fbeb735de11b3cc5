// Token embedding and RMSNorm.
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {

using namespace cpu;

void CpuBackend::embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out) {
  const char* op = "embedding_forward";
  const DType dt = check_float(op, {{"table", table}, {"out", out}});
  check_rank(op, {"table", table}, 2);
  check_rank(op, {"ids", ids}, 1);
  const int64_t v = table.dim(0), d = table.dim(1), n = ids.dim(0);
  check_shape(op, {"out", out}, {n, d});
  check_indices(op, {"ids", ids}, 0, v, true);
  const int32_t* id = ids.data<int32_t>();
  const size_t row_bytes = static_cast<size_t>(d) * dtype_size(dt);
  const auto* src = static_cast<const std::byte*>(table.raw());
  auto* dst = static_cast<std::byte*>(out.raw());
#pragma omp parallel for schedule(static) if (worth_threads(n * d))
  for (int64_t i = 0; i < n; ++i) {
    if (id[i] >= 0) std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes);
    else std::memset(dst + i * row_bytes, 0, row_bytes);
  }
}

void CpuBackend::embedding_backward(const Tensor& dout, const Tensor& ids, const Tensor& dtable) {
  const char* op = "embedding_backward";
  const DType dt = check_float(op, {{"dout", dout}, {"dtable", dtable}});
  check_rank(op, {"dtable", dtable}, 2);
  check_rank(op, {"ids", ids}, 1);
  const int64_t v = dtable.dim(0), d = dtable.dim(1), n = ids.dim(0);
  check_shape(op, {"dout", dout}, {n, d});
  check_indices(op, {"ids", ids}, 0, v, true);
  const int32_t* id = ids.data<int32_t>();
  dispatch(dt, [&]<class T>(T) {
    const T* g = dout.data<T>();
    T* tab = dtable.data<T>();
    // Repeated ids make row-parallel scatter racy; splitting the columns instead keeps each
    // element's sum in token order on one thread (race-free and deterministic).
#pragma omp parallel if (worth_threads(n * d))
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t per = ((d + nt - 1) / nt + 15) / 16 * 16;
      const int64_t c0 = std::min(d, t * per), c1 = std::min(d, c0 + per);
      for (int64_t i = 0; i < n; ++i) {
        if (id[i] < 0) continue;
        T* dst = tab + id[i] * d;
        const T* src = g + i * d;
#pragma omp simd
        for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
      }
    }
  });
}

void CpuBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  const DType dt = check_float(op, {{"x", x}, {"w", w}, {"y", y}, {"rstd", rstd}});
  check_rank(op, {"x", x}, 2);
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(op, {"w", w}, {d});
  check_shape(op, {"y", y}, {n, d});
  check_shape(op, {"rstd", rstd}, {n});
  dispatch(dt, [&]<class T>(T) {
    const T *xs = x.data<T>(), *ws = w.data<T>();
    T *ys = y.data<T>(), *rs = rstd.data<T>();
    const T e = T(eps);
#pragma omp parallel for schedule(static) if (worth_threads(n * d))
    for (int64_t i = 0; i < n; ++i) {
      const T* xr = xs + i * d;
      T ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
      const T r = T(1) / std::sqrt(ss / T(d) + e);
      rs[i] = r;
      T* yr = ys + i * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * r * ws[j];
    }
  });
}

void CpuBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                  const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  const DType dt =
      check_float(op, {{"dy", dy}, {"x", x}, {"w", w}, {"rstd", rstd}, {"dx", dx}, {"dw", dw}});
  check_rank(op, {"x", x}, 2);
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(op, {"dy", dy}, {n, d});
  check_shape(op, {"dx", dx}, {n, d});
  check_shape(op, {"w", w}, {d});
  check_shape(op, {"dw", dw}, {d});
  check_shape(op, {"rstd", rstd}, {n});
  dispatch(dt, [&]<class T>(T) {
    const T *g = dy.data<T>(), *xs = x.data<T>(), *ws = w.data<T>(), *rs = rstd.data<T>();
    T *dxs = dx.data<T>(), *dws = dw.data<T>();
    // dw is a sum over rows: per-chunk partials summed in chunk order, independent of threads.
    constexpr int64_t kRowsPerChunk = 64;
    const int64_t chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
    std::vector<T> part(static_cast<size_t>(chunks * d));
#pragma omp parallel for schedule(static) if (worth_threads(n * d))
    for (int64_t c = 0; c < chunks; ++c) {
      T* pw = part.data() + c * d;
      for (int64_t j = 0; j < d; ++j) pw[j] = 0;
      for (int64_t i = c * kRowsPerChunk; i < std::min(n, (c + 1) * kRowsPerChunk); ++i) {
        const T *gr = g + i * d, *xr = xs + i * d;
        T* dxr = dxs + i * d;
        const T r = rs[i];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < d; ++j) dot += gr[j] * ws[j] * xr[j];
        // d/dx of x * r(x) * w: r * (g w) - x * r^3 * <g w, x> / D
        const T coef = dot * r * r * r / T(d);
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
          dxr[j] += r * gr[j] * ws[j] - coef * xr[j];
          pw[j] += gr[j] * xr[j] * r;
        }
      }
    }
#pragma omp parallel for schedule(static) if (worth_threads(chunks * d))
    for (int64_t j = 0; j < d; ++j) {
      T s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += part[c * d + j];
      dws[j] += s;
    }
  });
}

}  // namespace sy
