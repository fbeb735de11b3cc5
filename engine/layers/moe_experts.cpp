// MoeLayer's experts: the held experts' weights as the grouped op takes them, and the expert
// computation on the rows this rank holds (locally, across expert parallelism, and with expert
// tensor parallelism), forward and backward. The router and the token bookkeeping are in
// moe_layer.cpp.
#include <algorithm>

#include "engine/layers/moe_layer.h"
#include "engine/layers/row_bias.h"

namespace sy {

std::vector<Tensor> MoeLayer::expert_w13(bool grad) const {
  std::vector<Tensor> v;
  for (int id : expert_w1_) v.push_back(grad ? ps_.fused_grad(id, 2) : ps_.fused_weight(id, 2));
  return v;
}

std::vector<Tensor> MoeLayer::expert_params(int offset, bool grad) const {
  std::vector<Tensor> v;
  for (int id : expert_w1_) v.push_back(grad ? ps_.grad(id + offset) : ps_.weight(id + offset));
  return v;
}

std::vector<Tensor> MoeLayer::expert_w2(bool grad) const { return expert_params(2, grad); }
std::vector<Tensor> MoeLayer::expert_b13(bool grad) const {
  return cfg_.expert_bias ? expert_params(3, grad) : std::vector<Tensor>{};
}
std::vector<Tensor> MoeLayer::expert_b2(bool grad) const {
  return cfg_.expert_bias ? expert_params(4, grad) : std::vector<Tensor>{};
}

void MoeLayer::experts_forward(Backend& be) {
  if (rows_ == 0) return;
  const auto w13 = expert_w13(false), w2 = expert_w2(false), b13 = expert_b13(false), b2 = expert_b2(false);
  const Tensor x = xp_.rows(0, rows_), h13 = h13_.rows(0, rows_), a = a_.rows(0, rows_), y = yp_.rows(0, rows_);
  if (impl_ == ExpertsImpl::Grouped) {
    be.grouped_swiglu_forward(x, plan_.offsets, w13, w2, h13, a, y, {cfg_.glu(), b13, b2});
    return;
  }
  // Sequential reference: one expert at a time through the plain dense ops.
  for (int64_t e = 0; e < cfg_.n_experts; ++e) {
    const int64_t lo = plan_.offsets[e], hi = plan_.offsets[e + 1];
    if (lo == hi) continue;
    Tensor ones;
    if (!b13.empty()) {
      ones = be.empty({hi - lo, 1}, x.dtype());
      be.fill(ones, 1.0);
    }
    be.gemm(x.rows(lo, hi), false, w13[e], true, h13.rows(lo, hi), 1, 0);
    if (!b13.empty()) add_row_bias(be, ones, b13[e], h13.rows(lo, hi));
    be.swiglu_forward(h13.rows(lo, hi), a.rows(lo, hi), cfg_.glu());
    be.gemm(a.rows(lo, hi), false, w2[e], false, y.rows(lo, hi), 1, 0);
    if (!b2.empty()) add_row_bias(be, ones, b2[e], y.rows(lo, hi));
  }
}

void MoeLayer::experts_backward(Backend& be) {
  const auto w13 = expert_w13(false), w2 = expert_w2(false);
  const auto dw13 = expert_w13(true), dw2 = expert_w2(true), db13 = expert_b13(true), db2 = expert_b2(true);
  const auto b13 = expert_b13(false), b2 = expert_b2(false);
  const Tensor x = xp_.rows(0, rows_), h13 = h13_.rows(0, rows_), a = a_.rows(0, rows_);
  const Tensor dy = dyp_.rows(0, rows_), dx = dxp_.rows(0, rows_);
  if (impl_ == ExpertsImpl::Grouped) {
    be.grouped_swiglu_backward(dy, x, plan_.offsets, w13, w2, h13, a, dx, dw13, dw2, {cfg_.glu(), b13, b2}, db13, db2);
    return;
  }
  for (int64_t e = 0; e < cfg_.n_experts; ++e) {
    const int64_t lo = plan_.offsets[e], hi = plan_.offsets[e + 1];
    if (lo == hi) continue;
    Tensor da = be.empty({hi - lo, cfg_.expert_ffn_dim}, x.dtype());
    Tensor dh13 = be.zeros({hi - lo, 2 * cfg_.expert_ffn_dim}, x.dtype());
    be.gemm(a.rows(lo, hi), true, dy.rows(lo, hi), false, dw2[e], 1, 1);
    be.gemm(dy.rows(lo, hi), false, w2[e], true, da, 1, 0);
    be.swiglu_backward(da, h13.rows(lo, hi), dh13, cfg_.glu());
    if (!db13.empty()) {
      Tensor ones = be.empty({hi - lo, 1}, x.dtype());
      be.fill(ones, 1.0);
      add_row_bias_grad(be, ones, dh13, db13[e]);
      add_row_bias_grad(be, ones, dy.rows(lo, hi), db2[e]);
    }
    be.gemm(dh13, true, x.rows(lo, hi), false, dw13[e], 1, 1);
    be.gemm(dh13, false, w13[e], false, dx.rows(lo, hi), 1, 1);
  }
}

void MoeLayer::ep_experts_forward(Backend& be) {
  const int64_t d = cfg_.d_model, f = f_local_;
  const DType dt = xp_.dtype();
  disp_->plan(be, plan_.offsets, dt, d);
  const int64_t r = disp_->recv_rows(), cap = std::max<int64_t>(r, 1);
  if (!xe_.defined() || xe_.dim(0) < cap || xe_.dtype() != dt) {
    // Released before the larger ones are allocated, so that growing never holds both.
    xe_ = h13e_ = ae_ = ye_ = dxe_ = Tensor();
    MemScope kept(be, MemCategory::Activations);
    xe_ = be.empty({cap, d}, dt);
    if (!sliced()) {  // with slices the hidden states are kept for the gathered rows
      h13e_ = be.empty({cap, 2 * f}, dt);
      ae_ = be.empty({cap, f}, dt);
    }
    ye_ = be.empty({cap, d}, dt);
    MemScope scratch(be, MemCategory::Workspace);
    dxe_ = be.empty({cap, d}, dt);
  }
  disp_->dispatch(be, xp_.rows(0, rows_), xe_.rows(0, r));
  // Under expert tensor parallelism the received rows are gathered over the ETP group (whose
  // ranks received the same experts' rows from their own EP groups).
  if (sliced())
    etp_forward(be, xe_.rows(0, r), disp_->segments(), ye_.rows(0, r));
  else if (r > 0)
    grouped_forward(be, xe_.rows(0, r), disp_->segments(), h13e_.rows(0, r), ae_.rows(0, r), ye_.rows(0, r));
  disp_->combine(be, ye_.rows(0, r), yp_.rows(0, rows_));
}

// The adjoint of ep_experts_forward, phase by phase in reverse: output gradients travel like the
// tokens did (dispatch), input gradients come home like the outputs did (combine).
void MoeLayer::ep_experts_backward(Backend& be) {
  const int64_t r = disp_->recv_rows();
  const Tensor dye = ye_.rows(0, r);  // the forward's outputs are no longer needed
  disp_->dispatch(be, dyp_.rows(0, rows_), dye);
  if (sliced()) {
    etp_backward(be, dye, dxe_.rows(0, r));
  } else if (r > 0) {
    be.fill(dxe_.rows(0, r), 0);
    grouped_backward(be, dye, xe_.rows(0, r), disp_->segments(), h13e_.rows(0, r), ae_.rows(0, r), dxe_.rows(0, r));
  }
  disp_->combine(be, dxe_.rows(0, r), dxp_.rows(0, rows_));
}

void MoeLayer::grouped_forward(Backend& be, const Tensor& x, const Segments& segs, const Tensor& h13, const Tensor& a,
                               const Tensor& y) {
  const auto w13 = expert_w13(false), w2 = expert_w2(false), b13 = expert_b13(false), b2 = expert_b2(false);
  for (const auto& s : segs) {
    const int64_t lo = s.begin, hi = s.begin + s.offsets.back();
    if (lo == hi) continue;
    be.grouped_swiglu_forward(x.rows(lo, hi), s.offsets, w13, w2, h13.rows(lo, hi), a.rows(lo, hi), y.rows(lo, hi),
                              {cfg_.glu(), b13, b2});
  }
}

void MoeLayer::grouped_backward(Backend& be, const Tensor& dy, const Tensor& x, const Segments& segs,
                                const Tensor& h13, const Tensor& a, const Tensor& dx) {
  const auto w13 = expert_w13(false), w2 = expert_w2(false), b13 = expert_b13(false), b2 = expert_b2(false);
  const auto dw13 = expert_w13(true), dw2 = expert_w2(true), db13 = expert_b13(true), db2 = expert_b2(true);
  for (const auto& s : segs) {
    const int64_t lo = s.begin, hi = s.begin + s.offsets.back();
    if (lo == hi) continue;
    be.grouped_swiglu_backward(dy.rows(lo, hi), x.rows(lo, hi), s.offsets, w13, w2, h13.rows(lo, hi), a.rows(lo, hi),
                               dx.rows(lo, hi), dw13, dw2, {cfg_.glu(), b13, b2}, db13, db2);
  }
}

// Expert tensor parallelism, forward: gather the ETP group's rows, run this rank's slices on all
// of them (h13 and a hold this slice's F/etp hidden units of every gathered row, which backward
// needs), and sum the down projection's partial outputs over the group into this rank's rows.
// Collective over the ETP group even when this rank has no rows. Always the grouped op: the
// Sequential reference is for one rank.
void MoeLayer::etp_forward(Backend& be, const Tensor& x, const Segments& segs, const Tensor& y) {
  if (!etp_) throw std::logic_error("a layer holding expert slices needs an expert-tensor-parallel exchange");
  const int64_t d = cfg_.d_model;
  const DType dt = x.dtype();
  etp_->plan(be, segs, x.dim(0), dt, d);
  const int64_t s = etp_->rows(), cap = std::max<int64_t>(s, 1);
  if (!xg_.defined() || xg_.dim(0) < cap || xg_.dtype() != dt) {
    xg_ = h13g_ = ag_ = yg_ = dxg_ = Tensor();  // released first, as in ep_experts_forward
    MemScope kept(be, MemCategory::Activations);
    xg_ = be.empty({cap, d}, dt);
    h13g_ = be.empty({cap, 2 * f_local_}, dt);
    ag_ = be.empty({cap, f_local_}, dt);
    // The partial outputs are dead once summed; backward reuses them for the gathered gradient.
    MemScope scratch(be, MemCategory::Workspace);
    yg_ = be.empty({cap, d}, dt);
    dxg_ = be.empty({cap, d}, dt);
  }
  etp_->gather(be, x, xg_.rows(0, s));
  if (s > 0) grouped_forward(be, xg_.rows(0, s), etp_->segments(), h13g_.rows(0, s), ag_.rows(0, s), yg_.rows(0, s));
  etp_->reduce_scatter(be, yg_.rows(0, s), y);
}

// The adjoint, phase by phase in reverse: the output gradient of every row is gathered (the
// adjoint of the sum-and-scatter), each slice adds its weight gradients over all the group's rows
// and its partial input gradients, which are summed back into the rows' owners (the adjoint of
// the gather). dx is overwritten.
void MoeLayer::etp_backward(Backend& be, const Tensor& dy, const Tensor& dx) {
  const int64_t s = etp_->rows();
  const Tensor dyg = yg_.rows(0, s);  // the forward's partial outputs are no longer needed
  etp_->gather(be, dy, dyg);
  if (s > 0) {
    be.fill(dxg_.rows(0, s), 0);
    grouped_backward(be, dyg, xg_.rows(0, s), etp_->segments(), h13g_.rows(0, s), ag_.rows(0, s), dxg_.rows(0, s));
  }
  etp_->reduce_scatter(be, dxg_.rows(0, s), dx);
}

}  // namespace sy
