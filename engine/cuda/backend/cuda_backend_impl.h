// The CudaBackend class, shared by its implementation files: cuda_backend.cu (memory,
// elementwise ops, GEMM), cuda_backend_experts.cu (the grouped experts) and cuda_backend_ops.cu
// (the layer ops).
#pragma once

#include <cmath>
#include <string>
#include <type_traits>

#include "engine/backend.h"
#include "engine/cuda/backend/cuda_args.h"
#include "engine/cuda/backend/cuda_backend.h"
#include "engine/cuda/blas/blas.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/dnn/dnn.h"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

template <class T> T* ptr(const Tensor& t) { return static_cast<T*>(t.raw()); }
// A host float as the device type T (for fill values).
template <class T> T from_host(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return __float2bfloat16(x);
}

// The SwiGLU's form as the kernels take it, after the CPU reference's check (the same message).
inline GluParams glu_params(const char* op, const Backend::GluOpts& glu) {
  if (!(glu.limit >= 0) || !std::isfinite(glu.alpha) || (!glu.clamped() && glu.alpha != 1.0))
    args::fail(op, "GluOpts needs limit >= 0 and, for the plain SwiGLU (limit 0), alpha 1");
  return glu.clamped() ? GluParams{float(glu.alpha), float(glu.limit)} : GluParams{};
}

// Runs `f(std::type_identity<T>{})` with T the device type of `dt` (float or __nv_bfloat16):
//   with_type(dt, [&](auto tag) { using T = typename decltype(tag)::type; kernel<T>(...); });
template <class F> void with_type(DType dt, F&& f) {
  if (dt == DType::BF16) f(std::type_identity<__nv_bfloat16>{});
  else f(std::type_identity<float>{});
}
#define SY_WITH_T(dt, ...)                   \
  ::sy::cuda::with_type((dt), [&](auto tag_) { \
    using T = typename decltype(tag_)::type; \
    __VA_ARGS__;                             \
  })

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  std::string name() const override { return SY_CUDA_EMULATED ? "cuda-emu" : "cuda"; }
  void* native_stream() const override { return stream_; }

  // cuda_backend.cu
  Tensor empty(const Shape& shape, DType dtype) override;
  void fill(const Tensor& t, double value) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void upload(const void* host, const Tensor& dst) override;
  void download(const Tensor& src, void* host) override;
  void convert(const Tensor& src, const Tensor& dst) override;
  void axpy(double alpha, const Tensor& x, const Tensor& y) override;
  void scale(const Tensor& x, double alpha) override;
  double sum_squares(const Tensor& x) override;
  bool all_finite(const Tensor& x) override;
  void gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, const Tensor& C, double alpha,
            double beta) override;

  // cuda_backend_experts.cu
  using Backend::grouped_swiglu_forward;
  using Backend::grouped_swiglu_backward;
  void grouped_swiglu_forward(const Tensor& x, std::span<const int64_t> offsets, std::span<const Tensor> w13,
                              std::span<const Tensor> w2, const Tensor& h13, const Tensor& a, const Tensor& y,
                              const ExpertOpts& opts) override;
  void grouped_swiglu_backward(const Tensor& dy, const Tensor& x, std::span<const int64_t> offsets,
                               std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                               const Tensor& a, const Tensor& dx, std::span<const Tensor> dw13,
                               std::span<const Tensor> dw2, const ExpertOpts& opts, std::span<const Tensor> db13,
                               std::span<const Tensor> db2) override;

  // cuda_backend_ops.cu
  void embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out) override;
  void embedding_backward(const Tensor& dout, const Tensor& ids, const Tensor& dtable) override;
  void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                        const Tensor& dw) override;
  void rope_forward(const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                    const Tensor& y) override;
  void rope_backward(const Tensor& dy, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                     const Tensor& dx) override;
  using Backend::attention_forward;
  using Backend::attention_backward;
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                         const AttentionOpts& opts) override;
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& lse, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                          const AttentionOpts& opts, const Tensor& dsinks) override;
  void copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col, int64_t width,
                    bool accumulate) override;
  using Backend::swiglu_forward;
  using Backend::swiglu_backward;
  void swiglu_forward(const Tensor& h, const Tensor& out, const GluOpts& glu) override;
  void swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh, const GluOpts& glu) override;
  void router_forward(const Tensor& logits, const Tensor& bias, ScoreFn fn, int k, bool norm_topk,
                      const Tensor& scores, const Tensor& idx, const Tensor& w, RouterGroups grp = {}) override;
  void router_backward(const Tensor& dw, const Tensor& aux_coef, const Tensor& logits, const Tensor& scores,
                       const Tensor& idx, ScoreFn fn, bool norm_topk, const Tensor& dlogits) override;
  double zloss_forward(const Tensor& logits) override;
  void zloss_backward(const Tensor& logits, double coef, const Tensor& dlogits) override;
  void gather_rows(const Tensor& x, const Tensor& src_rows, const Tensor& out) override;
  void gather_rows_backward(const Tensor& dxp, const Tensor& slot_rows, const Tensor& dx) override;
  void combine_forward(const Tensor& y, const Tensor& slot_rows, const Tensor& w, const Tensor& out) override;
  void combine_backward(const Tensor& dout, const Tensor& y, const Tensor& slot_rows, const Tensor& w,
                        const Tensor& dy, const Tensor& dw) override;
  double cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& lse) override;
  void logits_row_max(const Tensor& logits, const Tensor& row_max) override;
  void cross_entropy_shard_sums(const Tensor& logits, const Tensor& targets, const Tensor& global_max,
                                const Tensor& sum_exp, const Tensor& target_logit) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double scale,
                              const Tensor& dlogits) override;
  void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                    const AdamWArgs& args) override;

 private:
  // Device scratch reused across calls (grown, never shrunk): the norm's partial sums, per-row
  // losses, the grouped experts' intermediate gradients.
  float* scratch_f32(size_t n);
  double* scratch_f64(size_t n);
  // Sums n floats of device memory on the host, in order, in double.
  double host_sum(const float* p, int64_t n);

  cudaStream_t stream_ = nullptr;
  // Whether attention of this shape and type runs through cuDNN's fused SDPA (bf16 only: cuDNN
  // has no fp32 SDPA); the same answer for the forward and the backward pass.
  bool fused_attention(DType dt, const AttentionDims& d, bool sinks);
  Blas blas_;
  Dnn dnn_;
  DeviceBuffer<float> scratch_f32_;
  DeviceBuffer<double> scratch_f64_;
};

SY_CUDA_NS_END
}  // namespace sy::cuda
