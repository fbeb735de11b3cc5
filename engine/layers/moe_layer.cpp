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
