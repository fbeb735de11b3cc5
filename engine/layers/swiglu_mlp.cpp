#include "engine/layers/swiglu_mlp.h"

namespace sy {

SwiGluMlp::SwiGluMlp(ParamStore& ps, const std::string& prefix, int64_t d_model, int64_t d_ff, double init_std,
                     double out_std)
    : ps_(ps), d_ff_(d_ff) {
  w1_ = ps.add(prefix + ".w1", {d_ff, d_model}, ParamKind::Matrix, init_std);
  w3_ = ps.add(prefix + ".w3", {d_ff, d_model}, ParamKind::Matrix, init_std);
  w2_ = ps.add(prefix + ".w2", {d_model, d_ff}, ParamKind::Matrix, out_std);
}

void SwiGluMlp::ensure(Backend& be, int64_t n, DType dt) {
  if (h13_.defined() && h13_.dim(0) == n && h13_.dtype() == dt) return;
  h13_ = be.empty({n, 2 * d_ff_}, dt);
  a_ = be.empty({n, d_ff_}, dt);
  da_ = be.empty({n, d_ff_}, dt);
  dh13_ = be.empty({n, 2 * d_ff_}, dt);
}

void SwiGluMlp::forward(Backend& be, const Tensor& xn, const Tensor& out) {
  ensure(be, xn.dim(0), xn.dtype());
  be.gemm(xn, false, ps_.fused_value(w1_, 2), true, h13_, 1, 0);
  be.swiglu_forward(h13_, a_);
  be.gemm(a_, false, ps_.value(w2_), true, out, 1, 1);
}

void SwiGluMlp::backward(Backend& be, const Tensor& dout, const Tensor& xn, const Tensor& dxn) {
  be.gemm(dout, true, a_, false, ps_.grad(w2_), 1, 1);
  be.gemm(dout, false, ps_.value(w2_), false, da_, 1, 0);
  be.fill(dh13_, 0);
  be.swiglu_backward(da_, h13_, dh13_);
  be.gemm(dh13_, true, xn, false, ps_.fused_grad(w1_, 2), 1, 1);
  be.gemm(dh13_, false, ps_.fused_value(w1_, 2), false, dxn, 1, 1);
}

}  // namespace sy
