// Allocation, transfers and the whole-tensor elementwise ops and reductions.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {

using namespace cpu;

namespace {

// Reductions sum fixed-size chunks and then the chunk sums in order, so a result is the same
// bits whatever the thread count.
constexpr int64_t kChunk = 8192;

template <class T, class F> double chunked_sum(const T* x, int64_t n, F term) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = lo; i < hi; ++i) s += term(double(x[i]));
    part[c] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return s;
}

}  // namespace

Tensor CpuBackend::empty(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  // 64-byte alignment: whole cache lines and aligned AVX-512 loads for the kernels.
  const size_t padded = (bytes + 63) / 64 * 64 + 64;
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, padded));
  if (!p) throw std::bad_alloc();
  auto st = std::make_shared<Storage>();
  const MemCategory cat = tally_.current;
  tally_.counters->add(cat, int64_t(bytes));
  st->bytes = std::shared_ptr<std::byte>(p, [counters = tally_.counters, cat, bytes](std::byte* q) {
    counters->add(cat, -int64_t(bytes));
    std::free(q);
  });
  st->size = bytes;
  st->device = DeviceKind::Host;
  return Tensor(std::move(st), 0, shape, dtype);
}

void CpuBackend::fill(const Tensor& t, double value) {
  if (!t.defined()) fail("fill", "tensor is undefined");
  const int64_t n = t.numel();
  auto run = [&](auto* p, auto v) {
#pragma omp parallel for simd schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  };
  switch (t.dtype()) {
    case DType::F32: run(t.data<float>(), float(value)); break;
    case DType::F64: run(t.data<double>(), value); break;
    case DType::I32: run(t.data<int32_t>(), int32_t(value)); break;
    case DType::BF16: fail("fill", "bfloat16 tensors are the CUDA backend's; the CPU backend computes in float32/float64");
  }
}

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  if (!src.defined() || !dst.defined() || src.dtype() != dst.dtype() || src.numel() != dst.numel())
    fail("copy", "needs same dtype and numel: " + describe({{"src", src}, {"dst", dst}}));
  if (src.raw() != dst.raw()) std::memmove(dst.raw(), src.raw(), src.nbytes());
}

void CpuBackend::copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col, int64_t width,
                              bool accumulate) {
  const char* op = "copy_columns";
  const DType dt = check_float(op, {{"src", src}, {"dst", dst}});
  check_rank(op, {"src", src}, 2);
  check_rank(op, {"dst", dst}, 2);
  check_shape(op, {"dst", dst}, {src.dim(0), dst.dim(1)});
  if (width < 0 || src_col < 0 || dst_col < 0 || src_col + width > src.dim(1) || dst_col + width > dst.dim(1))
    fail(op, "columns [" + std::to_string(src_col) + ", +" + std::to_string(width) + ") -> [" +
                 std::to_string(dst_col) + ", +" + std::to_string(width) + ") out of range: " +
                 describe({{"src", src}, {"dst", dst}}));
  const int64_t rows = src.dim(0), cs = src.dim(1), cd = dst.dim(1);
  dispatch(dt, [&]<class T>(T) {
    const T* s = src.data<T>() + src_col;
    T* d = dst.data<T>() + dst_col;
#pragma omp parallel for schedule(static) if (worth_threads(rows * width))
    for (int64_t r = 0; r < rows; ++r) {
      if (accumulate) {
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) d[r * cd + c] += s[r * cs + c];
      } else {
        std::copy_n(s + r * cs, width, d + r * cd);
      }
    }
  });
}

void CpuBackend::upload(const void* host, const Tensor& dst) {
  if (!dst.defined()) fail("upload", "dst is undefined");
  if (dst.numel() > 0) std::memcpy(dst.raw(), host, dst.nbytes());
}

void CpuBackend::download(const Tensor& src, void* host) {
  if (!src.defined()) fail("download", "src is undefined");
  if (src.numel() > 0) std::memcpy(host, src.raw(), src.nbytes());
}

void CpuBackend::convert(const Tensor& src, const Tensor& dst) {
  check_float("convert", {{"src", src}});
  check_float("convert", {{"dst", dst}});
  check_numel("convert", {"dst", dst}, src.numel());
  if (src.dtype() == dst.dtype()) return copy(src, dst);
  const int64_t n = src.numel();
  auto run = [&](const auto* s, auto* d) {
    using D = std::remove_reference_t<decltype(*d)>;
#pragma omp parallel for simd schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) d[i] = D(s[i]);
  };
  if (src.dtype() == DType::F32) run(src.data<float>(), dst.data<double>());
  else run(src.data<double>(), dst.data<float>());
}

void CpuBackend::axpy(double alpha, const Tensor& x, const Tensor& y) {
  const DType dt = check_float("axpy", {{"x", x}, {"y", y}});
  check_numel("axpy", {"y", y}, x.numel());
  const int64_t n = x.numel();
  dispatch(dt, [&]<class T>(T) {
    const T* xs = x.data<T>();
    T* ys = y.data<T>();
    const T a = T(alpha);
#pragma omp parallel for simd schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) ys[i] += a * xs[i];
  });
}

void CpuBackend::scale(const Tensor& x, double alpha) {
  const DType dt = check_float("scale", {{"x", x}});
  const int64_t n = x.numel();
  dispatch(dt, [&]<class T>(T) {
    T* xs = x.data<T>();
    const T a = T(alpha);
#pragma omp parallel for simd schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) xs[i] *= a;
  });
}

double CpuBackend::sum_squares(const Tensor& x) {
  const DType dt = check_float("sum_squares", {{"x", x}});
  return dispatch(dt, [&]<class T>(T) { return chunked_sum(x.data<T>(), x.numel(), [](double v) { return v * v; }); });
}

bool CpuBackend::all_finite(const Tensor& x) {
  const DType dt = check_float("all_finite", {{"x", x}});
  // x * 0 is 0 for finite x and NaN for inf or NaN, so one sum answers without branches.
  const double s = dispatch(dt, [&]<class T>(T) { return chunked_sum(x.data<T>(), x.numel(), [](double v) { return v * 0.0; }); });
  return s == 0.0;
}

}  // namespace sy
