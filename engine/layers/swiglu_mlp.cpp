#include "engine/layers/swiglu_mlp.h"

namespace sy {

SwiGluMlp::SwiGluMlp(ParamStore& ps, const std::string& prefix, int64_t d_model, int64_t d_ff, double init_std,
                     double out_std, TpPlace tp, Backend::GluOpts glu)
    : ps_(ps), tp_(tp), glu_(glu), d_model_(d_model), d_ff_(d_ff / tp.size()) {
  const ParamSplit rows{TpSplit::Rows, tp.rank(), tp.size()};
  w1_ = ps.add(prefix + ".w1", {d_ff_, d_model}, ParamKind::Matrix, init_std, -1, rows);
  w3_ = ps.add(prefix + ".w3", {d_ff_, d_model}, ParamKind::Matrix, init_std, -1, rows);
  w2_ = ps.add(prefix + ".w2", {d_ff_, d_model}, ParamKind::Matrix, out_std, -1, rows);
}

void SwiGluMlp::ensure(Backend& be, int64_t local_rows, DType dt) {
  // The hidden activations cover every token row (sp gathers them) but only F/t columns.
  const int64_t n = tp_.seq() ? local_rows * tp_.size() : local_rows;
  if (h13_.defined() && h13_.dim(0) == n && h13_.dtype() == dt) return;
  MemScope kept(be, MemCategory::Activations);
  h13_ = be.empty({n, 2 * d_ff_}, dt);
  a_ = be.empty({n, d_ff_}, dt);
  MemScope scratch(be, MemCategory::Workspace);
  da_ = be.empty({n, d_ff_}, dt);
  dh13_ = be.empty({n, 2 * d_ff_}, dt);
}

void SwiGluMlp::forward(Backend& be, const Tensor& xn, const Tensor& out) {
  ensure(be, xn.dim(0), xn.dtype());
  const Tensor xin = tp_enter(tp_, xn);
  be.gemm(xin, false, ps_.fused_weight(w1_, 2), true, h13_, 1, 0);
  be.swiglu_forward(h13_, a_, glu_);
  if (!tp_.on()) {
    be.gemm(a_, false, ps_.weight(w2_), false, out, 1, 1);
    return;
  }
  be.gemm(a_, false, ps_.weight(w2_), false, tp_partial(tp_), 1, 0);
  tp_exit(be, tp_, out);
}

void SwiGluMlp::backward(Backend& be, const Tensor& dout, const Tensor& xn, const Tensor& dxn) {
  const Tensor dy = tp_exit_backward(tp_, dout);
  be.gemm(a_, true, dy, false, ps_.grad(w2_), 1, 1);
  be.gemm(dy, false, ps_.weight(w2_), true, da_, 1, 0);
  be.fill(dh13_, 0);
  be.swiglu_backward(da_, h13_, dh13_, glu_);
  const Tensor xin = tp_enter(tp_, xn);  // re-gathered with sp
  be.gemm(dh13_, true, xin, false, ps_.fused_grad(w1_, 2), 1, 1);
  if (!tp_.on()) {
    be.gemm(dh13_, false, ps_.fused_weight(w1_, 2), false, dxn, 1, 1);
    return;
  }
  be.gemm(dh13_, false, ps_.fused_weight(w1_, 2), false, tp_dinput(tp_), 1, 0);
  tp_enter_backward(be, tp_, dxn);
}

}  // namespace sy
