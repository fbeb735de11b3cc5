// The CPU reference backend. Ops are split over cpu_*.cpp by purpose; the semantics of every op
// are those written in engine/backend.h.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "engine/backend.h"

namespace sy {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  // cpu_memory.cpp
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

  // cpu_gemm.cpp
  void gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, const Tensor& C, double alpha,
            double beta) override;

  // cpu_norm_embed.cpp
  void embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out) override;
  void embedding_backward(const Tensor& dout, const Tensor& ids, const Tensor& dtable) override;
  void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                        const Tensor& dw) override;

  // cpu_memory.cpp (with the memory ops above)
  void copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col, int64_t width,
                    bool accumulate) override;

  // cpu_attention.cpp
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

  // cpu_loss_optim.cpp
  using Backend::swiglu_forward;
  using Backend::swiglu_backward;
  void swiglu_forward(const Tensor& h, const Tensor& out, const GluOpts& glu) override;
  void swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh, const GluOpts& glu) override;
  double cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& lse) override;
  void logits_row_max(const Tensor& logits, const Tensor& row_max) override;
  void cross_entropy_shard_sums(const Tensor& logits, const Tensor& targets, const Tensor& global_max,
                                const Tensor& sum_exp, const Tensor& target_logit) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double scale,
                              const Tensor& dlogits) override;
  void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                    const AdamWArgs& args) override;

  // cpu_router.cpp
  void router_forward(const Tensor& logits, const Tensor& bias, ScoreFn fn, int k, bool norm_topk,
                      const Tensor& scores, const Tensor& idx, const Tensor& w, RouterGroups grp = {}) override;
  void router_backward(const Tensor& dw, const Tensor& aux_coef, const Tensor& logits, const Tensor& scores,
                       const Tensor& idx, ScoreFn fn, bool norm_topk, const Tensor& dlogits) override;
  double zloss_forward(const Tensor& logits) override;
  void zloss_backward(const Tensor& logits, double coef, const Tensor& dlogits) override;

  // cpu_moe.cpp
  void gather_rows(const Tensor& x, const Tensor& src_rows, const Tensor& out) override;
  void gather_rows_backward(const Tensor& dxp, const Tensor& slot_rows, const Tensor& dx) override;
  void combine_forward(const Tensor& y, const Tensor& slot_rows, const Tensor& w, const Tensor& out) override;
  void combine_backward(const Tensor& dout, const Tensor& y, const Tensor& slot_rows, const Tensor& w,
                        const Tensor& dy, const Tensor& dw) override;
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

 private:
  // Temporary memory reused across calls (the grouped experts' backward), so a training step does
  // not fault in fresh pages for it every time. One backend serves one thread of calls.
  template <class T> T* scratch(size_t count) {
    const size_t bytes = count * sizeof(T) + 64;
    if (scratch_.size() < bytes) scratch_.resize(bytes);
    void* p = scratch_.data();
    size_t space = scratch_.size();
    return static_cast<T*>(std::align(64, count * sizeof(T), p, space));
  }
  std::vector<std::byte> scratch_;
};

}  // namespace sy
