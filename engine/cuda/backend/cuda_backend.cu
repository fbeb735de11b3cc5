// CudaBackend: memory, transfers, elementwise ops and reductions, GEMM (the grouped experts are in
// cuda_backend_experts.cu).
#include <cstring>
#include <vector>

#include "engine/cuda/backend/backend_factory.h"
#include "engine/cuda/backend/cuda_backend_impl.h"
#include "engine/cuda/kernels/kernel_common.cuh"
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
    case DType::BF16: return cuda::fill(ptr<__nv_bfloat16>(t), __float2bfloat16(float(value)), t.numel(), stream_);
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
  const int64_t n = src.numel();
  const DType a = src.dtype(), b = dst.dtype();
  if (a == DType::F32 && b == DType::F64) cuda::convert(src.data<float>(), dst.data<double>(), n, stream_);
  else if (a == DType::F64 && b == DType::F32) cuda::convert(src.data<double>(), dst.data<float>(), n, stream_);
  else if (a == DType::F32 && b == DType::BF16) cuda::convert(src.data<float>(), ptr<__nv_bfloat16>(dst), n, stream_);
  else if (a == DType::BF16 && b == DType::F32) cuda::convert(ptr<__nv_bfloat16>(src), dst.data<float>(), n, stream_);
  else args::fail(op, "no conversion between these types: " + args::describe({{"src", src}, {"dst", dst}}));
}

// ---- elementwise and reductions -------------------------------------------------------------------
void CudaBackend::axpy(double alpha, const Tensor& x, const Tensor& y) {
  const DType dt = args::floats("axpy", {{"x", x}, {"y", y}});
  if (x.numel() != y.numel()) args::fail("axpy", "numel differs: " + args::describe({{"x", x}, {"y", y}}));
  SY_WITH_T(dt, cuda::axpy(float(alpha), ptr<T>(x), ptr<T>(y), x.numel(), stream_));
}

void CudaBackend::scale(const Tensor& x, double alpha) {
  const DType dt = args::floats("scale", {{"x", x}});
  SY_WITH_T(dt, cuda::scale(ptr<T>(x), float(alpha), x.numel(), stream_));
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
  for (Arg a : {Arg{"A", A}, Arg{"B", B}, Arg{"C", C}}) args::floats(op, {a});
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
    if (beta == 0) return fill(C, 0.0);
    return scale(C, beta);
  }
  auto gt = [](const Tensor& t) { return t.dtype() == DType::BF16 ? GemmType::BF16 : GemmType::F32; };
  // cuBLASLt takes A and B of one type, and bf16 operands with a bf16 or float32 C; float32
  // operands need a float32 C. Those cover the model's GEMMs but the router's (float32 logit
  // gradients against bf16 activations or weights), which go through float32 copies.
  if (A.dtype() == B.dtype() && (A.dtype() == DType::BF16 || C.dtype() == DType::F32)) {
    blas_.gemm(trans_a, trans_b, m, n, k, float(alpha), A.raw(), A.dim(1), B.raw(), B.dim(1), float(beta), C.raw(), n,
               gt(A), gt(C), stream_);
    return;
  }
  const int64_t na = A.dtype() == DType::F32 ? 0 : A.numel(), nb = B.dtype() == DType::F32 ? 0 : B.numel();
  const int64_t nc = C.dtype() == DType::F32 ? 0 : C.numel();
  float* scratch = scratch_f32(size_t(na + nb + nc));
  const float* a32 = A.dtype() == DType::F32 ? A.data<float>() : scratch;
  const float* b32 = B.dtype() == DType::F32 ? B.data<float>() : scratch + na;
  float* c32 = C.dtype() == DType::F32 ? C.data<float>() : scratch + na + nb;
  if (na) cuda::convert(ptr<__nv_bfloat16>(A), scratch, na, stream_);
  if (nb) cuda::convert(ptr<__nv_bfloat16>(B), scratch + na, nb, stream_);
  if (nc && beta != 0) cuda::convert(ptr<__nv_bfloat16>(C), c32, nc, stream_);
  blas_.gemm(trans_a, trans_b, m, n, k, float(alpha), a32, A.dim(1), b32, B.dim(1), float(beta), c32, n, GemmType::F32,
             GemmType::F32, stream_);
  if (nc) cuda::convert(c32, ptr<__nv_bfloat16>(C), nc, stream_);
}

SY_CUDA_NS_END
}  // namespace sy::cuda

// The plain-C++ factories of backend_factory.h, one set per build.
namespace sy::cuda {
#if SY_CUDA_EMULATED
std::unique_ptr<Backend> make_emulated_backend() { return make_backend(0); }
void set_emulated_grid_stride_blocks(int64_t blocks) { g_emu_grid_stride_blocks = blocks; }
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
