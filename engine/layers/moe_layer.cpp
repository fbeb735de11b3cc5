#include "engine/layers/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/host_io.h"
#include "engine/layers/row_bias.h"

namespace sy {

MoeLayer::MoeLayer(ParamStore& ps, const ModelConfig& cfg, int64_t layer, ExpertRange held, TpPlace tp)
    : ps_(ps), cfg_(cfg), tp_(tp) {
  first_local_ = held.first;
  n_local_ = held.count < 0 ? cfg.n_experts - held.first : held.count;
  if (first_local_ < 0 || n_local_ < 1 || first_local_ + n_local_ > cfg.n_experts)
    throw std::logic_error("held experts out of range");
  slice_ = held.slice;
  slices_ = held.slices;
  if (slices_ < 1 || slice_ < 0 || slice_ >= slices_ || cfg.expert_ffn_dim % slices_ != 0)
    throw std::invalid_argument("model.expert_ffn_dim=" + std::to_string(cfg.expert_ffn_dim) +
                                " is not divisible by etp=" + std::to_string(slices_));
  f_local_ = cfg.expert_ffn_dim / slices_;
  const std::string p = "layers." + std::to_string(layer) + ".moe";
  const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
  // Each TP rank routes its own token rows, so its router gradient is a partial sum.
  router_ = ps.add(p + ".router.weight", {cfg.n_experts, cfg.d_model}, ParamKind::Matrix, cfg.init_std, -1,
                   {tp.on() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()});
  if (cfg.router_logit_bias)
    router_b_ = ps.add(p + ".router.logit_bias", {cfg.n_experts}, ParamKind::Bias, 0, -1,
                       {tp.on() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()});
  if (cfg.expert_bias && sliced())
    throw std::invalid_argument("model.expert_bias is not built for expert tensor parallelism: use etp=1");
  // Under expert tensor parallelism each matrix is this slice's block of rows of the whole
  // tensor, initialised and checkpointed at its global offset like a TP block.
  const ParamSplit part{sliced() ? TpSplit::Rows : TpSplit::Replicated, slice_, slices_};
  for (int64_t e = first_local_; e < first_local_ + n_local_; ++e) {
    const std::string q = p + ".experts." + std::to_string(e);
    // w1 and w3 back to back: they form the fused [2F, D] gate|up matrix of the grouped op (with
    // slices, [2F/etp, D]: this slice's gate rows, then the matching up rows).
    expert_w1_.push_back(ps.add(q + ".w1", {f_local_, cfg.d_model}, ParamKind::Matrix, cfg.init_std, e, part));
    ps.add(q + ".w3", {f_local_, cfg.d_model}, ParamKind::Matrix, cfg.init_std, e, part);
    ps.add(q + ".w2", {f_local_, cfg.d_model}, ParamKind::Matrix, out_std, e, part);  // [in, out]
    if (cfg.expert_bias) {
      ps.add(q + ".b13", {2 * f_local_}, ParamKind::Bias, 0, e);
      ps.add(q + ".b2", {cfg.d_model}, ParamKind::Bias, 0, e);
    }
  }
  for (int64_t s = 0; s < cfg.n_shared_experts; ++s)
    shared_.push_back(std::make_unique<SwiGluMlp>(ps, p + ".shared." + std::to_string(s), cfg.d_model,
                                                  cfg.expert_ffn_dim, cfg.init_std, out_std, tp, cfg.glu()));
  load_since_update_.assign(cfg.n_experts, 0);
}

void MoeLayer::allocate_buffers(Backend& be, DType dt) {
  MemScope state(be, MemCategory::Parameters);  // not trained, but part of the model's state
  bias_ = be.zeros({cfg_.n_experts}, accum_dtype(dt));
}

void MoeLayer::ensure(Backend& be, int64_t n, DType dt) {
  if (logits_.defined() && logits_.dim(0) == n && xp_.dtype() == dt) return;
  const int64_t e = cfg_.n_experts, k = cfg_.top_k;
  const DType rt = accum_dtype(dt);  // the router computes at float precision (bf16 runs too)
  // Permuted rows never exceed N * k, so these are allocated once at that size and viewed.
  const int64_t cap = n * k, d = cfg_.d_model, f = f_local_;
  MemScope kept(be, MemCategory::Activations);
  logits_ = be.empty({n, e}, rt);
  scores_ = be.empty({n, e}, rt);
  idx_ = be.empty({n, k}, DType::I32);
  slot_rows_ = be.empty({n, k}, DType::I32);
  w_ = be.empty({n, k}, rt);
  src_rows_ = be.empty({cap}, DType::I32);
  xp_ = be.empty({cap, d}, dt);
  if (!sliced()) {  // with slices the experts keep their hidden states for the gathered rows
    h13_ = be.empty({cap, 2 * f}, dt);
    a_ = be.empty({cap, f}, dt);
  }
  yp_ = be.empty({cap, d}, dt);
  MemScope scratch(be, MemCategory::Workspace);
  dlogits_ = be.empty({n, e}, rt);
  dw_ = be.empty({n, k}, rt);
  aux_coef_ = be.empty({e}, rt);
  dyp_ = be.empty({cap, d}, dt);
  dxp_ = be.empty({cap, d}, dt);
  if (router_b_ >= 0) {
    ones_ = be.empty({n, 1}, rt);
    be.fill(ones_, 1.0);
  }
}

std::vector<Tensor> MoeLayer::expert_w13(bool grad) const {
  std::vector<Tensor> v;
  for (int id : expert_w1_) v.push_back(grad ? ps_.fused_grad(id, 2) : ps_.fused_weight(id, 2));
  return v;
}

std::vector<Tensor> MoeLayer::expert_w2(bool grad) const {
  std::vector<Tensor> v;
  for (int id : expert_w1_) v.push_back(grad ? ps_.grad(id + 2) : ps_.weight(id + 2));
  return v;
}

std::vector<Tensor> MoeLayer::expert_b13(bool grad) const {
  std::vector<Tensor> v;
  if (cfg_.expert_bias)
    for (int id : expert_w1_) v.push_back(grad ? ps_.grad(id + 3) : ps_.weight(id + 3));
  return v;
}

std::vector<Tensor> MoeLayer::expert_b2(bool grad) const {
  std::vector<Tensor> v;
  if (cfg_.expert_bias)
    for (int id : expert_w1_) v.push_back(grad ? ps_.grad(id + 4) : ps_.weight(id + 4));
  return v;
}

void MoeLayer::set_expert_tp_exchange(TokenExchange* ex) {
  if (!ex && sliced()) throw std::logic_error("a layer holding expert slices needs an expert-tensor-parallel exchange");
  if (ex && (ex->n_ranks() != slices_ || ex->rank() != slice_))
    throw std::logic_error("the expert-tensor-parallel exchange is rank " + std::to_string(ex->rank()) + " of " +
                           std::to_string(ex->n_ranks()) + ", the layer holds slice " + std::to_string(slice_) +
                           " of " + std::to_string(slices_));
  etp_ = ex ? std::make_unique<ExpertTpRegion>(*ex) : nullptr;
}

void MoeLayer::set_token_exchange(TokenExchange* ex) {
  if (!ex && n_local_ != cfg_.n_experts)
    throw std::logic_error("a layer holding only some experts needs a token exchange");
  disp_ = ex ? std::make_unique<ExpertDispatcher>(*ex, cfg_.n_experts, first_local_, n_local_) : nullptr;
}

MoeForwardStats MoeLayer::forward(Backend& be, const Tensor& xn, const Tensor& out) {
  // The token rows this rank routes: all of xn, or its chunk of the replicated rows (tp, no sp).
  const bool chunked = tp_.on() && !tp_.sp;
  const int64_t t = tp_.size(), chunk = chunked ? xn.dim(0) / t : xn.dim(0);
  const Tensor x = chunked ? xn.rows(tp_.rank() * chunk, (tp_.rank() + 1) * chunk) : xn;
  const int64_t n = x.dim(0), e = cfg_.n_experts, k = cfg_.top_k;
  const int64_t n_all = n * t;  // the micro-batch's token rows
  ensure(be, n, xn.dtype());

  // Route.
  be.gemm(x, false, ps_.weight(router_), true, logits_, 1, 0);
  if (router_b_ >= 0) add_row_bias(be, ones_, ps_.weight(router_b_), logits_);
  const bool use_bias = cfg_.router_bias_update_rate > 0;
  be.router_forward(logits_, use_bias ? bias_ : Tensor(), cfg_.score_fn, int(k), cfg_.norm_topk_prob, scores_, idx_,
                    w_, RouterGroups{int(cfg_.n_expert_groups), int(cfg_.topk_groups)});
  if (cfg_.routed_scaling_factor != 1.0) be.scale(w_, cfg_.routed_scaling_factor);

  // Plan the permutation on the host (over the whole micro-batch, so drops are those of one
  // rank), then gather this rank's token rows grouped by expert.
  std::vector<int32_t> idx_host(n_all * k);
  if (tp_.on()) {
    if (!idx_all_.defined() || idx_all_.dim(0) != n_all) {
      MemScope scratch(be, MemCategory::Workspace);
      idx_all_ = be.empty({n_all, k}, DType::I32);
    }
    tp_.comm->all_gather_rows(idx_, idx_all_);
    be.download(idx_all_, idx_host.data());
    const DispatchPlan full = make_dispatch_plan(idx_host.data(), n_all, k, e, cfg_.capacity_factor);
    digest_ = dropped_digest(full);
    plan_ = restrict_plan(full, tp_.rank() * n, n);
  } else {
    be.download(idx_, idx_host.data());
    plan_ = make_dispatch_plan(idx_host.data(), n, k, e, cfg_.capacity_factor);
    digest_ = dropped_digest(plan_);
  }
  rows_ = plan_.rows();
  be.upload(plan_.slot_rows.data(), slot_rows_);
  if (rows_ > 0) {
    be.upload(plan_.src_rows.data(), src_rows_.rows(0, rows_));
    be.gather_rows(x, src_rows_.rows(0, rows_), xp_.rows(0, rows_));
  }
  if (disp_) {
    ep_experts_forward(be);
  } else if (n_local_ != e) {
    throw std::logic_error("a layer holding only some experts needs a token exchange");
  } else if (sliced()) {
    own_segs_.assign(1, ExpertDispatcher::Segment{0, plan_.offsets});
    etp_forward(be, xp_.rows(0, rows_), own_segs_, yp_.rows(0, rows_));
  } else {
    experts_forward(be);
  }
  if (chunked) {
    if (!y_chunk_.defined() || y_chunk_.dim(0) != n || y_chunk_.dtype() != xn.dtype()) {
      MemScope scratch(be, MemCategory::Workspace);
      y_chunk_ = be.empty({n, cfg_.d_model}, xn.dtype());
      dx_chunk_ = be.empty({n, cfg_.d_model}, xn.dtype());
    }
    be.fill(y_chunk_, 0);
    if (rows_ > 0) be.combine_forward(yp_.rows(0, rows_), slot_rows_, w_, y_chunk_);
    // Before the shared experts borrow the workspace.
    tp_.comm->all_gather_rows(y_chunk_, tp_partial(tp_));
    be.axpy(1.0, tp_partial(tp_), out);
  } else if (rows_ > 0) {
    be.combine_forward(yp_.rows(0, rows_), slot_rows_, w_, out);
  }
  for (auto& s : shared_) s->forward(be, xn, out);

  // Losses. f_e (the routed share) is a constant of the step; P_e is the mean balancing probability.
  MoeForwardStats st;
  st.routed = plan_.routed;
  st.dropped = plan_.dropped;
  st.dropped_digest = digest_;
  if (disp_) {
    st.rows_sent_off_rank = plan_.rows() - (plan_.offsets[first_local_ + n_local_] - plan_.offsets[first_local_]);
    st.rows_received_off_rank = disp_->rows_received_off_rank();
  }
  st.assignments = n_all * k;
  for (int64_t i = 0; i < e; ++i) load_since_update_[i] += plan_.routed[i];
  aux_coef_host_.assign(e, 0.0);
  // Under TP the sums over token rows (P_e and the z-loss) add up over the TP ranks' rows.
  std::vector<double> sums(e + 1, 0.0);  // P_e sums, then the z-loss sum
  if (cfg_.aux_loss_coef > 0) {
    const std::vector<double> scores = download_f64(be, scores_);
    for (int64_t r = 0; r < n; ++r) {
      double row = 0;
      for (int64_t i = 0; i < e; ++i) row += scores[r * e + i];
      for (int64_t i = 0; i < e; ++i) sums[i] += scores[r * e + i] / row;
    }
  }
  if (cfg_.z_loss_coef > 0) sums[e] = be.zloss_forward(logits_);
  if (tp_.on()) tp_.comm->all_reduce_host(sums);
  if (cfg_.aux_loss_coef > 0) {
    for (int64_t i = 0; i < e; ++i) {
      const double f_e = double(plan_.routed[i]) / double(n_all * k);
      st.aux_loss += cfg_.aux_loss_coef * double(e) * f_e * sums[i] / double(n_all);
      // d aux / d p[t, i] = coef * E * f_i / N
      aux_coef_host_[i] = cfg_.aux_loss_coef * double(e) * f_e / double(n_all);
    }
  }
  if (cfg_.z_loss_coef > 0) st.z_loss = cfg_.z_loss_coef * sums[e] / double(n_all);
  return st;
}

void MoeLayer::backward(Backend& be, const Tensor& dout, const Tensor& xn, const Tensor& dxn, double loss_scale) {
  for (auto& s : shared_) s->backward(be, dout, xn, dxn);
  // The adjoints of the chunking: the output's all-gather becomes taking this chunk's rows of the
  // (replicated) output gradient; the input's chunk becomes an all-gather of the input gradient.
  const bool chunked = tp_.on() && !tp_.sp;
  const int64_t n = logits_.dim(0), n_all = n * tp_.size();
  const int64_t first = tp_.rank() * n;
  const Tensor dy = chunked ? dout.rows(first, first + n) : dout;
  const Tensor x = chunked ? xn.rows(first, first + n) : xn;
  const Tensor dx = chunked ? dx_chunk_ : dxn;
  if (chunked) be.fill(dx_chunk_, 0);

  be.fill(dw_, 0);
  if (rows_ > 0) {
    be.fill(dyp_.rows(0, rows_), 0);
    be.combine_backward(dy, yp_.rows(0, rows_), slot_rows_, w_, dyp_.rows(0, rows_), dw_);
  }
  // With expert parallelism the exchanges are collective: a rank with no rows still takes part.
  if (disp_) {
    ep_experts_backward(be);
  } else if (sliced()) {
    etp_backward(be, dyp_.rows(0, rows_), dxp_.rows(0, rows_));
  } else if (rows_ > 0) {
    be.fill(dxp_.rows(0, rows_), 0);
    experts_backward(be);
  }
  if (rows_ > 0) be.gather_rows_backward(dxp_.rows(0, rows_), slot_rows_, dx);

  be.fill(dlogits_, 0);
  Tensor aux_coef;
  if (cfg_.aux_loss_coef > 0) {
    std::vector<double> scaled(aux_coef_host_);
    for (double& c : scaled) c *= loss_scale;
    upload_f64(be, scaled, aux_coef_);
    aux_coef = aux_coef_;
  }
  // The combine weights were scaled after the router: d(unscaled w) = factor * d(w).
  if (cfg_.routed_scaling_factor != 1.0) be.scale(dw_, cfg_.routed_scaling_factor);
  be.router_backward(dw_, aux_coef, logits_, scores_, idx_, cfg_.score_fn, cfg_.norm_topk_prob, dlogits_);
  if (cfg_.z_loss_coef > 0) be.zloss_backward(logits_, cfg_.z_loss_coef * loss_scale / double(n_all), dlogits_);
  be.gemm(dlogits_, true, x, false, ps_.grad(router_), 1, 1);
  if (router_b_ >= 0) add_row_bias_grad(be, ones_, dlogits_, ps_.grad(router_b_));
  be.gemm(dlogits_, false, ps_.weight(router_), false, dx, 1, 1);
  if (chunked) {
    tp_.comm->all_gather_rows(dx_chunk_, tp_dinput(tp_));
    be.axpy(1.0, tp_dinput(tp_), dxn);
  }
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

void MoeLayer::update_bias(Backend& be) {
  const int64_t e = cfg_.n_experts;
  if (cfg_.router_bias_update_rate <= 0) {
    load_since_update_.assign(e, 0);
    return;
  }
  double mean = 0;
  for (int64_t c : load_since_update_) mean += double(c);
  mean /= double(e);
  std::vector<double> b = download_f64(be, bias_);
  for (int64_t i = 0; i < e; ++i) {
    const double diff = mean - double(load_since_update_[i]);
    b[i] += cfg_.router_bias_update_rate * double((diff > 0) - (diff < 0));
  }
  upload_f64(be, b, bias_);
  load_since_update_.assign(e, 0);
}

}  // namespace sy
