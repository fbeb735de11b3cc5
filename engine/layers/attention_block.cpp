#include "engine/layers/attention_block.h"

#include <cmath>
#include <string>

#include "engine/layers/row_bias.h"

namespace sy {

AttentionBlock::AttentionBlock(ParamStore& ps, const ModelConfig& cfg, int64_t layer, TpPlace tp)
    : ps_(ps), cfg_(cfg), tp_(tp), heads_(cfg.n_heads / tp.size()), kv_heads_(cfg.n_kv_heads / tp.size()),
      head_dim_(cfg.resolved_head_dim()), window_(cfg.layer_window(layer)) {
  const std::string p = "layers." + std::to_string(layer);
  const int64_t d = cfg.d_model;
  // Output projections start smaller so the residual stream's variance does not grow with depth.
  const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
  const ParamSplit rows{TpSplit::Rows, tp.rank(), tp.size()};
  norm_ = ps.add(p + ".attn_norm.weight", {d}, ParamKind::Norm, 0, -1,
                 {tp.seq() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()});
  wq_ = ps.add(p + ".attn.wq", {heads_ * head_dim_, d}, ParamKind::Matrix, cfg.init_std, -1, rows);
  wk_ = ps.add(p + ".attn.wk", {kv_heads_ * head_dim_, d}, ParamKind::Matrix, cfg.init_std, -1, rows);
  wv_ = ps.add(p + ".attn.wv", {kv_heads_ * head_dim_, d}, ParamKind::Matrix, cfg.init_std, -1, rows);
  wo_ = ps.add(p + ".attn.wo", {heads_ * head_dim_, d}, ParamKind::Matrix, out_std, -1, rows);
  if (cfg.attention_bias) {
    bq_ = ps.add(p + ".attn.bq", {heads_ * head_dim_}, ParamKind::Bias, 0, -1, rows);
    bk_ = ps.add(p + ".attn.bk", {kv_heads_ * head_dim_}, ParamKind::Bias, 0, -1, rows);
    bv_ = ps.add(p + ".attn.bv", {kv_heads_ * head_dim_}, ParamKind::Bias, 0, -1, rows);
    // Added to the reduced output rows: each rank's own rows under sp (a partial gradient).
    bo_ = ps.add(p + ".attn.bo", {d}, ParamKind::Bias, 0, -1,
                 {tp.seq() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()});
  }
  if (cfg.attention_sinks) sinks_ = ps.add(p + ".attn.sinks", {heads_}, ParamKind::Bias, cfg.init_std, -1, rows);
  if (cfg.qk_norm != "none") {
    // Per head: one weight over head_dim, the same on every TP rank, whose gradient each rank
    // collects from its own heads (Partial: summed over TP). Full: over all heads (tp 1 only).
    const bool head = cfg.qk_norm == "head";
    const ParamSplit split{tp.on() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()};
    q_norm_ = ps.add(p + ".attn.q_norm.weight", {head ? head_dim_ : heads_ * head_dim_}, ParamKind::Norm, 0, -1, split);
    k_norm_ = ps.add(p + ".attn.k_norm.weight", {head ? head_dim_ : kv_heads_ * head_dim_}, ParamKind::Norm, 0, -1, split);
  }
}

Backend::AttentionOpts AttentionBlock::opts() const {
  Backend::AttentionOpts o;
  o.window = window_;
  o.scale = cfg_.attention_scale();
  if (sinks_ >= 0) o.sinks = ps_.weight(sinks_);
  return o;
}

Tensor AttentionBlock::qk_rows(const Tensor& t, int64_t heads) const {
  const int64_t n = t.numel() / (heads * head_dim_);
  return cfg_.qk_norm == "head" ? t.reshape({n * heads, head_dim_}) : t.reshape({n, heads * head_dim_});
}

void AttentionBlock::ensure(Backend& be, int64_t batch, int64_t seq, int64_t local_rows, DType dt) {
  if (xn_.defined() && xn_.dim(0) == local_rows && q_.dim(0) == batch && q_.dim(1) == seq && xn_.dtype() == dt) return;
  const int64_t d = cfg_.d_model;
  MemScope kept(be, MemCategory::Activations);
  xn_ = be.empty({local_rows, d}, dt);
  rstd_ = be.empty({local_rows}, accum_dtype(dt));
  q_ = be.empty({batch, seq, heads_, head_dim_}, dt);
  k_ = be.empty({batch, seq, kv_heads_, head_dim_}, dt);
  v_ = be.empty({batch, seq, kv_heads_, head_dim_}, dt);
  o_ = be.empty({batch, seq, heads_, head_dim_}, dt);
  lse_ = be.empty({batch, heads_, seq}, accum_dtype(dt));
  MemScope scratch(be, MemCategory::Workspace);
  do_ = be.empty(o_.shape(), dt);
  dq_ = be.empty(q_.shape(), dt);
  dk_ = be.empty(k_.shape(), dt);
  dv_ = be.empty(v_.shape(), dt);
  dq_pre_ = be.empty(q_.shape(), dt);
  dk_pre_ = be.empty(k_.shape(), dt);
  dxn_ = be.empty({local_rows, d}, dt);
  if (q_norm_ >= 0) {
    MemScope qk(be, MemCategory::Activations);
    q_raw_ = be.empty(q_.shape(), dt);
    k_raw_ = be.empty(k_.shape(), dt);
    rstd_q_ = be.empty({qk_rows(q_, heads_).dim(0)}, accum_dtype(dt));
    rstd_k_ = be.empty({qk_rows(k_, kv_heads_).dim(0)}, accum_dtype(dt));
    MemScope scratch2(be, MemCategory::Workspace);
    dq_raw_ = be.empty(q_.shape(), dt);
    dk_raw_ = be.empty(k_.shape(), dt);
  }
}

void AttentionBlock::forward(Backend& be, const Tensor& x, const Tensor& out, const AttentionInputs& rope,
                             int64_t batch, int64_t seq) {
  ensure(be, batch, seq, x.dim(0), x.dtype());
  const int64_t n = batch * seq;
  be.rmsnorm_forward(x, ps_.weight(norm_), cfg_.norm_eps, xn_, rstd_);
  const Tensor xin = tp_enter(tp_, xn_);
  const bool qk = q_norm_ >= 0;  // with QK-norm the projections land in q_raw_/k_raw_ first
  const Tensor q2 = (qk ? q_raw_ : q_).reshape({n, heads_ * head_dim_});
  const Tensor k2 = (qk ? k_raw_ : k_).reshape({n, kv_heads_ * head_dim_});
  be.gemm(xin, false, ps_.weight(wq_), true, q2, 1, 0);
  be.gemm(xin, false, ps_.weight(wk_), true, k2, 1, 0);
  if (bq_ >= 0) {
    add_row_bias(be, rope.ones, ps_.weight(bq_), q2);
    add_row_bias(be, rope.ones, ps_.weight(bk_), k2);
  }
  if (qk) {
    be.rmsnorm_forward(qk_rows(q_raw_, heads_), ps_.weight(q_norm_), cfg_.norm_eps, qk_rows(q_, heads_), rstd_q_);
    be.rmsnorm_forward(qk_rows(k_raw_, kv_heads_), ps_.weight(k_norm_), cfg_.norm_eps, qk_rows(k_, kv_heads_), rstd_k_);
  }
  be.gemm(xin, false, ps_.weight(wv_), true, v_.reshape({n, kv_heads_ * head_dim_}), 1, 0);
  if (bv_ >= 0) add_row_bias(be, rope.ones, ps_.weight(bv_), v_.reshape({n, kv_heads_ * head_dim_}));
  const Tensor q3 = q_.reshape({n, heads_, head_dim_}), k3 = k_.reshape({n, kv_heads_, head_dim_});
  be.rope_forward(q3, rope.positions, rope.cos, rope.sin, q3);
  be.rope_forward(k3, rope.positions, rope.cos, rope.sin, k3);
  be.attention_forward(q_, k_, v_, o_, lse_, opts());
  be.copy(x, out);
  const Tensor o2 = o_.reshape({n, heads_ * head_dim_});
  if (!tp_.on()) {
    be.gemm(o2, false, ps_.weight(wo_), false, out, 1, 1);
  } else {
    be.gemm(o2, false, ps_.weight(wo_), false, tp_partial(tp_), 1, 0);
    tp_exit(be, tp_, out);
  }
  if (bo_ >= 0) add_row_bias(be, rope.ones, ps_.weight(bo_), out);
}

void AttentionBlock::backward(Backend& be, const Tensor& x, const Tensor& dresid, const AttentionInputs& rope) {
  const int64_t n = q_.dim(0) * q_.dim(1);
  const Tensor o2 = o_.reshape({n, heads_ * head_dim_}), do2 = do_.reshape({n, heads_ * head_dim_});
  if (bo_ >= 0) add_row_bias_grad(be, rope.ones, dresid, ps_.grad(bo_));
  const Tensor dout = tp_exit_backward(tp_, dresid);
  be.gemm(o2, true, dout, false, ps_.grad(wo_), 1, 1);
  be.gemm(dout, false, ps_.weight(wo_), true, do2, 1, 0);

  be.fill(dq_, 0);
  be.fill(dk_, 0);
  be.fill(dv_, 0);
  be.attention_backward(do_, q_, k_, v_, o_, lse_, dq_, dk_, dv_, opts(), sinks_ >= 0 ? ps_.grad(sinks_) : Tensor());
  be.fill(dq_pre_, 0);
  be.fill(dk_pre_, 0);
  be.rope_backward(dq_.reshape({n, heads_, head_dim_}), rope.positions, rope.cos, rope.sin,
                   dq_pre_.reshape({n, heads_, head_dim_}));
  be.rope_backward(dk_.reshape({n, kv_heads_, head_dim_}), rope.positions, rope.cos, rope.sin,
                   dk_pre_.reshape({n, kv_heads_, head_dim_}));

  if (q_norm_ >= 0) {  // back through the QK-norm: d(projected q, k) from d(normed q, k)
    be.fill(dq_raw_, 0);
    be.fill(dk_raw_, 0);
    be.rmsnorm_backward(qk_rows(dq_pre_, heads_), qk_rows(q_raw_, heads_), ps_.weight(q_norm_), rstd_q_,
                        qk_rows(dq_raw_, heads_), ps_.grad(q_norm_));
    be.rmsnorm_backward(qk_rows(dk_pre_, kv_heads_), qk_rows(k_raw_, kv_heads_), ps_.weight(k_norm_), rstd_k_,
                        qk_rows(dk_raw_, kv_heads_), ps_.grad(k_norm_));
  }
  const Tensor dq2 = (q_norm_ >= 0 ? dq_raw_ : dq_pre_).reshape({n, heads_ * head_dim_});
  const Tensor dk2 = (q_norm_ >= 0 ? dk_raw_ : dk_pre_).reshape({n, kv_heads_ * head_dim_});
  const Tensor dv2 = dv_.reshape({n, kv_heads_ * head_dim_});
  if (bq_ >= 0) {
    add_row_bias_grad(be, rope.ones, dq2, ps_.grad(bq_));
    add_row_bias_grad(be, rope.ones, dk2, ps_.grad(bk_));
    add_row_bias_grad(be, rope.ones, dv2, ps_.grad(bv_));
  }
  const Tensor xin = tp_enter(tp_, xn_);  // re-gathered with sp: only this rank's rows were kept
  be.gemm(dq2, true, xin, false, ps_.grad(wq_), 1, 1);
  be.gemm(dk2, true, xin, false, ps_.grad(wk_), 1, 1);
  be.gemm(dv2, true, xin, false, ps_.grad(wv_), 1, 1);
  const Tensor dx = tp_.on() ? tp_dinput(tp_) : dxn_;
  be.gemm(dq2, false, ps_.weight(wq_), false, dx, 1, 0);
  be.gemm(dk2, false, ps_.weight(wk_), false, dx, 1, 1);
  be.gemm(dv2, false, ps_.weight(wv_), false, dx, 1, 1);
  if (tp_.on()) {
    be.fill(dxn_, 0);
    tp_enter_backward(be, tp_, dxn_);
  }
  be.rmsnorm_backward(dxn_, x, ps_.weight(norm_), rstd_, dresid, ps_.grad(norm_));
}

}  // namespace sy
