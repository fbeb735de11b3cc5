// CudaBackend: memory, transfers, elementwise ops and reductions, GEMM and the grouped experts.
#include <cstring>
#include <vector>

#include "engine/cuda/backend/backend_factory.h"
#include "engine/cuda/backend/cuda_backend_impl.h"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

using args::Arg;

std::unique_ptr<Backend> make_backend(int device) { return std::make_unique<CudaBackend>(device); }

CudaBackend::CudaBackend(int device) {
  SY_CUDA_CHECK(cudaSetDevice(device));
  SY_CUDA_CHECK(cudaStreamCreate(&stream_));
}

CudaBackend::~CudaBackend() { cudaStreamDestroy(stream_); }

float* CudaBackend::scratch_f32(size_t n) {
  if (scratch_f32_.size() < n) scratch_f32_ = DeviceBuffer<float>(n);
  return scratch_f32_.get();
}

double* CudaBackend::scratch_f64(size_t n) {
  if (scratch_f64_.size() < n) scratch_f64_ = DeviceBuffer<double>(n);
  return scratch_f64_.get();
}

double CudaBackend::host_sum(const float* p, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  if (n) SY_CUDA_CHECK(cudaMemcpyAsync(h.data(), p, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
  double s = 0;  // in row order: the same bits for every launch configuration
  for (float x : h) s += x;
  return s;
}

// ---- memory -----------------------------------------------------------------------------------
Tensor CudaBackend::empty(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* p = nullptr;
  SY_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  auto st = std::make_shared<Storage>();
  const MemCategory cat = tally_.current;
  tally_.counters->add(cat, int64_t(bytes));
  // cudaFree synchronises with the device, so a buffer a kernel in flight reads stays valid.
  st->bytes = std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [counters = tally_.counters, cat, bytes](std::byte* q) {
    counters->add(cat, -int64_t(bytes));
    cudaFree(q);
  });
  st->size = bytes;
  st->device = DeviceKind::Cuda;
  return Tensor(std::move(st), 0, shape, dtype);
}

void CudaBackend::fill(const Tensor& t, double value) {
  if (!t.defined() || t.device() != DeviceKind::Cuda) args::fail("fill", "needs a defined CUDA tensor");
  switch (t.dtype()) {
    case DType::F32: return cuda::fill(t.data<float>(), float(value), t.numel(), stream_);
    case DType::F64: return cuda::fill(t.data<double>(), value, t.numel(), stream_);
    case DType::I32: return cuda::fill(t.data<int32_t>(), int32_t(value), t.numel(), stream_);
  }
}

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  if (!src.defined() || !dst.defined() || src.dtype() != dst.dtype() || src.numel() != dst.numel() ||
      src.device() != DeviceKind::Cuda || dst.device() != DeviceKind::Cuda)
    args::fail("copy", "needs CUDA tensors of the same dtype and numel: " + args::describe({{"src", src}, {"dst", dst}}));
  if (src.raw() != dst.raw() && src.nbytes())
    SY_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::upload(const void* host, const Tensor& dst) {
  if (!dst.defined() || dst.device() != DeviceKind::Cuda) args::fail("upload", "dst must be a CUDA tensor");
  if (dst.nbytes()) SY_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), host, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may reuse its host buffer at once
}

void CudaBackend::download(const Tensor& src, void* host) {
  if (!src.defined() || src.device() != DeviceKind::Cuda) args::fail("download", "src must be a CUDA tensor");
  if (src.nbytes()) SY_CUDA_CHECK(cudaMemcpyAsync(host, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::convert(const Tensor& src, const Tensor& dst) {
  const char* op = "convert";
  if (!src.defined() || !dst.defined() || src.dtype() == DType::I32 || dst.dtype() == DType::I32)
    args::fail(op, "needs float tensors: " + args::describe({{"src", src}, {"dst", dst}}));
  args::check(op, {"src", src}, src.dtype());
  args::check(op, {"dst", dst}, dst.dtype());
  if (src.numel() != dst.numel()) args::fail(op, "numel differs: " + args::describe({{"src", src}, {"dst", dst}}));
  if (src.dtype() == dst.dtype()) return copy(src, dst);
  if (src.dtype() == DType::F32) cuda::convert(src.data<float>(), dst.data<double>(), src.numel(), stream_);
  else cuda::convert(src.data<double>(), dst.data<float>(), src.numel(), stream_);
}

// ---- elementwise and reductions -------------------------------------------------------------------
void CudaBackend::axpy(double alpha, const Tensor& x, const Tensor& y) {
  args::f32("axpy", {{"x", x}, {"y", y}});
  if (x.numel() != y.numel()) args::fail("axpy", "numel differs: " + args::describe({{"x", x}, {"y", y}}));
  cuda::axpy(float(alpha), x.data<float>(), y.data<float>(), x.numel(), stream_);
}

void CudaBackend::scale(const Tensor& x, double alpha) {
  args::f32("scale", {{"x", x}});
  cuda::scale(x.data<float>(), float(alpha), x.numel(), stream_);
}

double CudaBackend::sum_squares(const Tensor& x) {
  args::f32("sum_squares", {{"x", x}});
  double* s = scratch_f64(sum_squares_scratch() + 1);
  cuda::sum_squares(x.data<float>(), x.numel(), s, s + 1, stream_);
  double out = 0;
  SY_CUDA_CHECK(cudaMemcpyAsync(&out, s, sizeof out, cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

bool CudaBackend::all_finite(const Tensor& x) {
  args::f32("all_finite", {{"x", x}});
  unsigned* count = reinterpret_cast<unsigned*>(scratch_f32(1));
  SY_CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(unsigned), stream_));
  count_nonfinite(x.data<float>(), x.numel(), count, stream_);
  unsigned host = 0;
  SY_CUDA_CHECK(cudaMemcpyAsync(&host, count, sizeof host, cudaMemcpyDeviceToHost, stream_));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return host == 0;
}

// ---- dense algebra ------------------------------------------------------------------------------------
void CudaBackend::gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, const Tensor& C, double alpha,
                       double beta) {
  const char* op = "gemm";
  args::f32(op, {{"A", A}, {"B", B}, {"C", C}});
  args::rank(op, {"A", A}, 2);
  args::rank(op, {"B", B}, 2);
  args::rank(op, {"C", C}, 2);
  const int64_t m = trans_a ? A.dim(1) : A.dim(0), k = trans_a ? A.dim(0) : A.dim(1);
  const int64_t kb = trans_b ? B.dim(1) : B.dim(0), n = trans_b ? B.dim(0) : B.dim(1);
  if (k != kb || C.dim(0) != m || C.dim(1) != n)
    args::fail(op, std::string("shape mismatch for C = op(A) op(B) with trans_a=") + (trans_a ? "1" : "0") +
                       ", trans_b=" + (trans_b ? "1" : "0") + ": " + args::describe({{"A", A}, {"B", B}, {"C", C}}));
  if (m == 0 || n == 0) return;
  if (k == 0) {  // no product: C = beta C, where beta 0 must also clear NaN
    if (beta == 0) return cuda::fill(C.data<float>(), 0.0f, C.numel(), stream_);
    return cuda::scale(C.data<float>(), float(beta), C.numel(), stream_);
  }
  blas_.gemm(trans_a, trans_b, m, n, k, float(alpha), A.data<float>(), A.dim(1), B.data<float>(), B.dim(1),
             float(beta), C.data<float>(), n, GemmType::F32, GemmType::F32, stream_);
}

// ---- grouped SwiGLU experts: per expert, two GEMMs around the SwiGLU kernel --------------------------
namespace {

struct Group {
  int64_t e, d, f;
};

Group check_grouped(const char* op, const Tensor& x, std::span<const int64_t> offsets, std::span<const Tensor> w13,
                    std::span<const Tensor> w2, const Tensor& h13, const Tensor& a) {
  const int64_t e = int64_t(w13.size());
  if (e == 0 || int64_t(w2.size()) != e || int64_t(offsets.size()) != e + 1)
    args::fail(op, "needs E w13, E w2 and E+1 offsets with E > 0");
  args::f32(op, {{"x", x}, {"h13", h13}, {"a", a}});
  args::rank(op, {"x", x}, 2);
  const int64_t m = x.dim(0), d = x.dim(1), f = w13[0].dim(0) / 2;
  for (int64_t i = 0; i < e; ++i) {
    args::f32(op, {{"w13[e]", w13[i]}, {"w2[e]", w2[i]}});
    args::shape(op, {"w13[e]", w13[i]}, {2 * f, d});
    args::shape(op, {"w2[e]", w2[i]}, {f, d});  // stored [in, out]
  }
  args::shape(op, {"h13", h13}, {m, 2 * f});
  args::shape(op, {"a", a}, {m, f});
  bool ok = offsets[0] == 0 && offsets[e] == m;
  for (int64_t i = 0; i < e; ++i) ok = ok && offsets[i] <= offsets[i + 1];
  if (!ok) args::fail(op, "offsets must rise from 0 to the row count of " + args::describe({{"x", x}}));
  return {e, d, f};
}

}  // namespace

void CudaBackend::grouped_swiglu_forward(const Tensor& x, std::span<const int64_t> offsets,
                                         std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                         const Tensor& a, const Tensor& y) {
  const char* op = "grouped_swiglu_forward";
  const auto [e, d, f] = check_grouped(op, x, offsets, w13, w2, h13, a);
  args::f32(op, {{"y", y}});
  args::shape(op, {"y", y}, x.shape());
  const float *xs = x.data<float>();
  float *hs = h13.data<float>(), *as = a.data<float>(), *ys = y.data<float>();
  for (int64_t g = 0; g < e; ++g) {
    const int64_t lo = offsets[g], rows = offsets[g + 1] - lo;
    if (rows == 0) continue;  // an empty group launches nothing
    blas_.gemm(false, true, rows, 2 * f, d, 1.0f, xs + lo * d, d, w13[g].data<float>(), d, 0.0f, hs + lo * 2 * f,
               2 * f, GemmType::F32, GemmType::F32, stream_);
    cuda::swiglu_forward(hs + lo * 2 * f, as + lo * f, rows, f, stream_);
    blas_.gemm(false, false, rows, d, f, 1.0f, as + lo * f, f, w2[g].data<float>(), d, 0.0f, ys + lo * d, d,
               GemmType::F32, GemmType::F32, stream_);
  }
}

void CudaBackend::grouped_swiglu_backward(const Tensor& dy, const Tensor& x, std::span<const int64_t> offsets,
                                          std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                          const Tensor& a, const Tensor& dx, std::span<const Tensor> dw13,
                                          std::span<const Tensor> dw2) {
  const char* op = "grouped_swiglu_backward";
  const auto [e, d, f] = check_grouped(op, x, offsets, w13, w2, h13, a);
  args::f32(op, {{"dy", dy}, {"dx", dx}});
  args::shape(op, {"dy", dy}, x.shape());
  args::shape(op, {"dx", dx}, x.shape());
  if (int64_t(dw13.size()) != e || int64_t(dw2.size()) != e) args::fail(op, "needs E dw13 and E dw2");
  for (int64_t g = 0; g < e; ++g) {
    args::f32(op, {{"dw13[e]", dw13[g]}, {"dw2[e]", dw2[g]}});
    args::shape(op, {"dw13[e]", dw13[g]}, {2 * f, d});
    args::shape(op, {"dw2[e]", dw2[g]}, {f, d});
  }
  const int64_t m = x.dim(0);
  // da [M, F] and dh13 [M, 2F] for every row, in one scratch buffer.
  float* da = scratch_f32(size_t(m * 3 * f));
  float* dh = da + m * f;
  const float *g_y = dy.data<float>(), *xs = x.data<float>(), *hs = h13.data<float>(), *as = a.data<float>();
  float* dxs = dx.data<float>();
  for (int64_t g = 0; g < e; ++g) {
    const int64_t lo = offsets[g], rows = offsets[g + 1] - lo;
    if (rows == 0) continue;
    float *dag = da + lo * f, *dhg = dh + lo * 2 * f;
    blas_.gemm(false, true, rows, f, d, 1.0f, g_y + lo * d, d, w2[g].data<float>(), d, 0.0f, dag, f, GemmType::F32,
               GemmType::F32, stream_);
    cuda::fill(dhg, 0.0f, rows * 2 * f, stream_);  // swiglu_backward accumulates
    cuda::swiglu_backward(dag, hs + lo * 2 * f, dhg, rows, f, stream_);
    blas_.gemm(false, false, rows, d, 2 * f, 1.0f, dhg, 2 * f, w13[g].data<float>(), d, 1.0f, dxs + lo * d, d,
               GemmType::F32, GemmType::F32, stream_);
    blas_.gemm(true, false, f, d, rows, 1.0f, as + lo * f, f, g_y + lo * d, d, 1.0f, dw2[g].data<float>(), d,
               GemmType::F32, GemmType::F32, stream_);
    blas_.gemm(true, false, 2 * f, d, rows, 1.0f, dhg, 2 * f, xs + lo * d, d, 1.0f, dw13[g].data<float>(), d,
               GemmType::F32, GemmType::F32, stream_);
  }
}

SY_CUDA_NS_END
}  // namespace sy::cuda

// The plain-C++ factories of backend_factory.h, one set per build.
namespace sy::cuda {
#if SY_CUDA_EMULATED
std::unique_ptr<Backend> make_emulated_backend() { return make_backend(0); }
#else
int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError();  // clear it: a later call must not report this one
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device";
  return n;
}
std::unique_ptr<Backend> make_cuda_backend(int device) { return make_backend(device); }
#endif
}  // namespace sy::cuda
