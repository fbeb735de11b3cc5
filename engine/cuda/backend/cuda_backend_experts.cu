// CudaBackend's grouped SwiGLU experts: per step one grouped GEMM over every expert around one
// SwiGLU launch over all rows (docs/cuda.md, "Grouped GEMM"), plain or GPT-OSS's clamped
// SwiGLU, with or without the experts' biases.
#include <string>
#include <vector>

#include "engine/cuda/backend/cuda_backend_impl.h"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

struct Group {
  int64_t e, d, f;
  DType dt;  // activations and weights (float32 or bfloat16); gradients of weights are float32
};

Group check_grouped(const char* op, const Tensor& x, std::span<const int64_t> offsets, std::span<const Tensor> w13,
                    std::span<const Tensor> w2, const Tensor& h13, const Tensor& a) {
  const int64_t e = int64_t(w13.size());
  if (e == 0 || int64_t(w2.size()) != e || int64_t(offsets.size()) != e + 1)
    args::fail(op, "needs E w13, E w2 and E+1 offsets with E > 0");
  const DType dt = args::floats(op, {{"x", x}, {"h13", h13}, {"a", a}});
  args::rank(op, {"x", x}, 2);
  const int64_t m = x.dim(0), d = x.dim(1), f = w13[0].dim(0) / 2;
  for (int64_t i = 0; i < e; ++i) {
    args::floats(op, {{"x", x}, {"w13[e]", w13[i]}, {"w2[e]", w2[i]}});
    args::shape(op, {"w13[e]", w13[i]}, {2 * f, d});
    args::shape(op, {"w2[e]", w2[i]}, {f, d});  // stored [in, out]
  }
  args::shape(op, {"h13", h13}, {m, 2 * f});
  args::shape(op, {"a", a}, {m, f});
  bool ok = offsets[0] == 0 && offsets[e] == m;
  for (int64_t i = 0; i < e; ++i) ok = ok && offsets[i] <= offsets[i + 1];
  if (!ok) args::fail(op, "offsets must rise from 0 to the row count of " + args::describe({{"x", x}}));
  return {e, d, f, dt};
}

// The biases of the E experts (forward: of the activations' type dt) or their gradients (float32,
// the master gradients, as every weight gradient under mixed precision): none, or b13[e] [2F] and
// b2[e] [D] for all. The CPU backend's check and message.
void check_expert_biases(const char* op, std::span<const Tensor> b13, std::span<const Tensor> b2, int64_t e,
                         int64_t d, int64_t f, DType dt, const char* n13, const char* n2) {
  if (b13.empty() && b2.empty()) return;
  if (int64_t(b13.size()) != e || int64_t(b2.size()) != e)
    args::fail(op, std::to_string(b13.size()) + " gate|up and " + std::to_string(b2.size()) + " down biases for " +
                       std::to_string(e) + " experts (need none or E of each)");
  for (int64_t g = 0; g < e; ++g) {
    args::check(op, {n13, b13[g]}, dt);
    args::check(op, {n2, b2[g]}, dt);
    args::shape(op, {n13, b13[g]}, {2 * f});
    args::shape(op, {n2, b2[g]}, {d});
  }
}

template <class P> std::vector<P> pointers(std::span<const Tensor> ts) {
  std::vector<P> v;
  for (const Tensor& t : ts) v.push_back(static_cast<P>(t.raw()));
  return v;
}

GemmType gemm_type(DType dt) { return dt == DType::BF16 ? GemmType::BF16 : GemmType::F32; }

}  // namespace

// With biases, each expert's rows of h13 and y first hold its bias and the GEMMs add the product
// onto them (beta 1): bias and product are summed in the GEMM's float accumulator and rounded
// once, where adding the bias after the GEMM would round a bf16 output twice.
void CudaBackend::grouped_swiglu_forward(const Tensor& x, std::span<const int64_t> offsets,
                                         std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                         const Tensor& a, const Tensor& y, const ExpertOpts& opts) {
  const char* op = "grouped_swiglu_forward";
  const Group gr = check_grouped(op, x, offsets, w13, w2, h13, a);
  const int64_t e = gr.e, d = gr.d, f = gr.f;  // named locals: the lambdas below capture them
  const DType dt = gr.dt;
  args::floats(op, {{"x", x}, {"y", y}});
  args::shape(op, {"y", y}, x.shape());
  const GluParams glu = glu_params(op, opts.glu);
  check_expert_biases(op, opts.b13, opts.b2, e, d, f, dt, "b13[e]", "b2[e]");
  const bool bias = !opts.b13.empty();
  const int64_t m = x.dim(0);
  if (m == 0) return;
  const GemmType g_t = gemm_type(dt);
  const float beta = bias ? 1.0f : 0.0f;
  SY_WITH_T(dt, {
    const T* xs = ptr<T>(x);
    T *hs = ptr<T>(h13), *as = ptr<T>(a), *ys = ptr<T>(y);
    const size_t ng = size_t(e);
    std::vector<GemmGroup> g1(ng), g2(ng);
    for (int64_t g = 0; g < e; ++g) {
      const int64_t lo = offsets[g], rows = offsets[g + 1] - lo;
      g1[g] = {rows, 2 * f, d, xs + lo * d, w13[g].raw(), hs + lo * 2 * f};  // h13_e = x_e w13[e]^T (+ b13[e])
      g2[g] = {rows, d, f, as + lo * f, w2[g].raw(), ys + lo * d};            // y_e = a_e w2[e] (+ b2[e])
    }
    if (bias) expert_bias_rows(hs, pointers<const T*>(opts.b13).data(), offsets.data(), e, 2 * f, false, stream_);
    blas_.grouped_gemm(false, true, g1, 1.0f, d, d, beta, 2 * f, g_t, g_t, stream_);
    cuda::swiglu_forward(hs, as, m, f, stream_, glu);
    if (bias) expert_bias_rows(ys, pointers<const T*>(opts.b2).data(), offsets.data(), e, d, false, stream_);
    blas_.grouped_gemm(false, false, g2, 1.0f, f, d, beta, d, g_t, g_t, stream_);
  });
}

void CudaBackend::grouped_swiglu_backward(const Tensor& dy, const Tensor& x, std::span<const int64_t> offsets,
                                          std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                          const Tensor& a, const Tensor& dx, std::span<const Tensor> dw13,
                                          std::span<const Tensor> dw2, const ExpertOpts& opts,
                                          std::span<const Tensor> db13, std::span<const Tensor> db2) {
  const char* op = "grouped_swiglu_backward";
  const Group gr = check_grouped(op, x, offsets, w13, w2, h13, a);
  const int64_t e = gr.e, d = gr.d, f = gr.f;
  const DType dt = gr.dt;
  args::floats(op, {{"x", x}, {"dy", dy}, {"dx", dx}});
  args::shape(op, {"dy", dy}, x.shape());
  args::shape(op, {"dx", dx}, x.shape());
  if (int64_t(dw13.size()) != e || int64_t(dw2.size()) != e) args::fail(op, "needs E dw13 and E dw2");
  for (int64_t g = 0; g < e; ++g) {
    args::f32(op, {{"dw13[e]", dw13[g]}, {"dw2[e]", dw2[g]}});  // float32 gradients under mixed precision
    args::shape(op, {"dw13[e]", dw13[g]}, {2 * f, d});
    args::shape(op, {"dw2[e]", dw2[g]}, {f, d});
  }
  const GluParams glu = glu_params(op, opts.glu);
  check_expert_biases(op, db13, db2, e, d, f, DType::F32, "db13[e]", "db2[e]");
  if (opts.b13.empty() != db13.empty())
    args::fail(op, "bias gradients must be given exactly when the forward pass had biases");
  const int64_t m = x.dim(0);
  if (m == 0) return;
  const GemmType g_t = gemm_type(dt);
  SY_WITH_T(dt, {
    // da [M, F] and dh13 [M, 2F] for every row, in one scratch buffer (of T: float scratch is
    // at least as large).
    T* da = reinterpret_cast<T*>(scratch_f32(size_t(m * 3 * f)));
    T* dh = da + m * f;
    const T *g_y = ptr<T>(dy), *xs = ptr<T>(x), *hs = ptr<T>(h13), *as = ptr<T>(a);
    T* dxs = ptr<T>(dx);
    const size_t ng = size_t(e);
    std::vector<GemmGroup> b1(ng), b3(ng), b4(ng), b5(ng);
    for (int64_t g = 0; g < e; ++g) {
      const int64_t lo = offsets[g], rows = offsets[g + 1] - lo;
      b1[g] = {rows, f, d, g_y + lo * d, w2[g].raw(), da + lo * f};             // da_e = dy_e w2[e]^T
      b3[g] = {rows, d, 2 * f, dh + lo * 2 * f, w13[g].raw(), dxs + lo * d};    // dx_e += dh13_e w13[e]
      b4[g] = {f, d, rows, as + lo * f, g_y + lo * d, dw2[g].raw()};            // dw2[e] += a_e^T dy_e
      b5[g] = {2 * f, d, rows, dh + lo * 2 * f, xs + lo * d, dw13[g].raw()};    // dw13[e] += dh13_e^T x_e
    }
    blas_.grouped_gemm(false, true, b1, 1.0f, d, d, 0.0f, f, g_t, g_t, stream_);
    cuda::fill(dh, from_host<T>(0.0f), m * 2 * f, stream_);  // swiglu_backward accumulates
    cuda::swiglu_backward(da, hs, dh, m, f, stream_, glu);
    blas_.grouped_gemm(false, false, b3, 1.0f, 2 * f, d, 1.0f, d, g_t, g_t, stream_);
    // Weight gradients accumulate in float32 (the master gradients), from T operands.
    blas_.grouped_gemm(true, false, b4, 1.0f, f, d, 1.0f, d, g_t, GemmType::F32, stream_);
    blas_.grouped_gemm(true, false, b5, 1.0f, 2 * f, d, 1.0f, d, g_t, GemmType::F32, stream_);
    // The biases' gradients: column sums of each expert's rows of dh13 (db13) and dy (db2), added
    // into the float32 gradients like the GEMMs above.
    if (!db13.empty()) {
      expert_bias_grad(dh, pointers<float*>(db13).data(), offsets.data(), e, 2 * f, stream_);
      expert_bias_grad(g_y, pointers<float*>(db2).data(), offsets.data(), e, d, stream_);
    }
  });
}

SY_CUDA_NS_END
}  // namespace sy::cuda
