#include "engine/layers/mla_block.h"

#include <cmath>
#include <string>

#include "engine/layers/attention_block.h"

namespace sy {

std::unique_ptr<AttentionLayer> make_attention_layer(ParamStore& ps, const ModelConfig& cfg, int64_t layer,
                                                     TpPlace tp) {
  if (!cfg.mla()) return std::make_unique<AttentionBlock>(ps, cfg, layer, tp);
  return std::make_unique<MlaBlock>(ps, cfg, layer, tp);
}

MlaBlock::MlaBlock(ParamStore& ps, const ModelConfig& cfg, int64_t layer, TpPlace tp)
    : ps_(ps), cfg_(cfg), tp_(tp), heads_(cfg.n_heads / tp.size()), nope_(cfg.qk_nope_head_dim), rope_(cfg.qk_rope_head_dim),
      qk_(cfg.qk_head_dim()), vd_(cfg.v_head_dim), q_rank_(cfg.q_lora_rank), kv_rank_(cfg.kv_lora_rank) {
  opts_.window = cfg.layer_window(layer);
  opts_.scale = cfg.attention_scale();
  const std::string p = "layers." + std::to_string(layer);
  const int64_t d = cfg.d_model;
  const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
  // Under TP the heads split (wq_b or wq, wkv_b by output rows, wo by input rows); the latents'
  // down-projections and norms are computed whole on every rank, each of which sends back the
  // gradient of its own heads only: a partial sum over TP.
  const ParamSplit rows{TpSplit::Rows, tp.rank(), tp.size()};
  const ParamSplit whole{tp.on() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()};
  norm_ = ps.add(p + ".attn_norm.weight", {d}, ParamKind::Norm, 0, -1,
                 {tp.seq() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()});
  if (q_rank_ > 0) {
    wq_a_ = ps.add(p + ".attn.wq_a", {q_rank_, d}, ParamKind::Matrix, cfg.init_std, -1, whole);
    q_a_norm_ = ps.add(p + ".attn.q_a_norm.weight", {q_rank_}, ParamKind::Norm, 0, -1, whole);
    wq_b_ = ps.add(p + ".attn.wq_b", {heads_ * qk_, q_rank_}, ParamKind::Matrix, cfg.init_std, -1, rows);
  } else {
    wq_ = ps.add(p + ".attn.wq", {heads_ * qk_, d}, ParamKind::Matrix, cfg.init_std, -1, rows);
  }
  wkv_a_ = ps.add(p + ".attn.wkv_a", {kv_rank_ + rope_, d}, ParamKind::Matrix, cfg.init_std, -1, whole);
  kv_a_norm_ = ps.add(p + ".attn.kv_a_norm.weight", {kv_rank_}, ParamKind::Norm, 0, -1, whole);
  wkv_b_ = ps.add(p + ".attn.wkv_b", {heads_ * (nope_ + vd_), kv_rank_}, ParamKind::Matrix, cfg.init_std, -1, rows);
  wo_ = ps.add(p + ".attn.wo", {heads_ * vd_, d}, ParamKind::Matrix, out_std, -1, rows);  // stored [in, out]
}

void MlaBlock::ensure(Backend& be, int64_t batch, int64_t seq, int64_t local_rows, DType dt) {
  const int64_t n = batch * seq, d = cfg_.d_model;
  if (xn_.defined() && xn_.dim(0) == local_rows && q_.dim(0) == batch && q_.dim(1) == seq && xn_.dtype() == dt) return;
  const DType acc = accum_dtype(dt);
  {
    MemScope kept(be, MemCategory::Activations);
    xn_ = be.empty({local_rows, d}, dt);
    rstd_ = be.empty({local_rows}, acc);
    if (q_rank_ > 0) {
      cq_ = be.empty({n, q_rank_}, dt);
      rstd_q_ = be.empty({n}, acc);
      cqn_ = be.empty({n, q_rank_}, dt);
    }
    ckv_ = be.empty({n, kv_rank_}, dt);
    rstd_kv_ = be.empty({n}, acc);
    ckvn_ = be.empty({n, kv_rank_}, dt);
    q_ = be.empty({batch, seq, heads_, qk_}, dt);
    k_ = be.empty({batch, seq, heads_, qk_}, dt);
    v_ = be.empty({batch, seq, heads_, vd_}, dt);
    o_ = be.empty({batch, seq, heads_, vd_}, dt);
    lse_ = be.empty({batch, heads_, seq}, acc);
  }
  MemScope scratch(be, MemCategory::Workspace);
  kva_ = be.empty({n, kv_rank_ + rope_}, dt);
  kvb_ = be.empty({n, heads_ * (nope_ + vd_)}, dt);
  tail_ = be.empty({n * heads_, rope_}, dt);
  tail2_ = be.empty({n * heads_, rope_}, dt);
  do_ = be.empty(o_.shape(), dt);
  dq_ = be.empty(q_.shape(), dt);
  dk_ = be.empty(k_.shape(), dt);
  dv_ = be.empty(v_.shape(), dt);
  dkva_ = be.empty(kva_.shape(), dt);
  dkvb_ = be.empty(kvb_.shape(), dt);
  dckvn_ = be.empty({n, kv_rank_}, dt);
  dckv_ = be.empty({n, kv_rank_}, dt);
  if (q_rank_ > 0) {
    dcqn_ = be.empty({n, q_rank_}, dt);
    dcq_ = be.empty({n, q_rank_}, dt);
  }
  dxn_ = be.empty({local_rows, d}, dt);
}

void MlaBlock::rope_tail(Backend& be, const Tensor& t, int64_t heads, const AttentionInputs& rope, bool backward) {
  const int64_t n = t.numel() / (heads * qk_);
  const Tensor rows = t.reshape({n * heads, qk_});
  const Tensor a = tail_.rows(0, n * heads), b = tail2_.rows(0, n * heads);
  be.copy_columns(rows, nope_, a, 0, rope_, false);
  if (!backward) {
    be.rope_forward(a.reshape({n, heads, rope_}), rope.positions, rope.cos, rope.sin, a.reshape({n, heads, rope_}));
    be.copy_columns(a, 0, rows, nope_, rope_, false);
    return;
  }
  be.fill(b, 0);
  be.rope_backward(a.reshape({n, heads, rope_}), rope.positions, rope.cos, rope.sin, b.reshape({n, heads, rope_}));
  be.copy_columns(b, 0, rows, nope_, rope_, false);
}

void MlaBlock::forward(Backend& be, const Tensor& x, const Tensor& out, const AttentionInputs& rope, int64_t batch,
                       int64_t seq) {
  ensure(be, batch, seq, x.dim(0), x.dtype());
  const int64_t n = batch * seq;
  const Tensor q2 = q_.reshape({n, heads_ * qk_});
  be.rmsnorm_forward(x, ps_.weight(norm_), cfg_.norm_eps, xn_, rstd_);
  const Tensor xin = tp_enter(tp_, xn_);  // every token row (all-gathered with sp)
  if (q_rank_ > 0) {
    be.gemm(xin, false, ps_.weight(wq_a_), true, cq_, 1, 0);
    be.rmsnorm_forward(cq_, ps_.weight(q_a_norm_), cfg_.norm_eps, cqn_, rstd_q_);
    be.gemm(cqn_, false, ps_.weight(wq_b_), true, q2, 1, 0);
  } else {
    be.gemm(xin, false, ps_.weight(wq_), true, q2, 1, 0);
  }
  rope_tail(be, q_, heads_, rope, false);

  // kv latent | shared rotary key; the latent is normed and projected up to each head's
  // non-rotary key and value.
  be.gemm(xin, false, ps_.weight(wkv_a_), true, kva_, 1, 0);
  be.copy_columns(kva_, 0, ckv_, 0, kv_rank_, false);
  be.rmsnorm_forward(ckv_, ps_.weight(kv_a_norm_), cfg_.norm_eps, ckvn_, rstd_kv_);
  be.gemm(ckvn_, false, ps_.weight(wkv_b_), true, kvb_, 1, 0);
  const Tensor kvb_rows = kvb_.reshape({n * heads_, nope_ + vd_});
  be.copy_columns(kvb_rows, 0, k_.reshape({n * heads_, qk_}), 0, nope_, false);
  be.copy_columns(kvb_rows, nope_, v_.reshape({n * heads_, vd_}), 0, vd_, false);
  const Tensor kpe = tail_.rows(0, n);  // [n, rope]: one rotary key per token
  be.copy_columns(kva_, kv_rank_, kpe, 0, rope_, false);
  be.rope_forward(kpe.reshape({n, 1, rope_}), rope.positions, rope.cos, rope.sin, kpe.reshape({n, 1, rope_}));
  const Tensor k2 = k_.reshape({n, heads_ * qk_});
  for (int64_t h = 0; h < heads_; ++h) be.copy_columns(kpe, 0, k2, h * qk_ + nope_, rope_, false);

  be.attention_forward(q_, k_, v_, o_, lse_, opts_);
  be.copy(x, out);
  const Tensor o2 = o_.reshape({n, heads_ * vd_});
  if (!tp_.on()) {
    be.gemm(o2, false, ps_.weight(wo_), false, out, 1, 1);
    return;
  }
  be.gemm(o2, false, ps_.weight(wo_), false, tp_partial(tp_), 1, 0);
  tp_exit(be, tp_, out);
}

void MlaBlock::backward(Backend& be, const Tensor& x, const Tensor& dresid, const AttentionInputs& rope) {
  const int64_t n = q_.dim(0) * q_.dim(1);
  const Tensor o2 = o_.reshape({n, heads_ * vd_}), do2 = do_.reshape({n, heads_ * vd_});
  const Tensor dout = tp_exit_backward(tp_, dresid);
  be.gemm(o2, true, dout, false, ps_.grad(wo_), 1, 1);
  be.gemm(dout, false, ps_.weight(wo_), true, do2, 1, 0);
  be.fill(dq_, 0);
  be.fill(dk_, 0);
  be.fill(dv_, 0);
  be.attention_backward(do_, q_, k_, v_, o_, lse_, dq_, dk_, dv_, opts_, Tensor());

  // Keys and values back to the up-projection's output and the shared rotary key (summed over heads).
  const Tensor dkvb_rows = dkvb_.reshape({n * heads_, nope_ + vd_});
  be.copy_columns(dk_.reshape({n * heads_, qk_}), 0, dkvb_rows, 0, nope_, false);
  be.copy_columns(dv_.reshape({n * heads_, vd_}), 0, dkvb_rows, nope_, vd_, false);
  const Tensor dkpe = tail_.rows(0, n), dkpe0 = tail2_.rows(0, n);
  be.fill(dkpe, 0);
  const Tensor dk2 = dk_.reshape({n, heads_ * qk_});
  for (int64_t h = 0; h < heads_; ++h) be.copy_columns(dk2, h * qk_ + nope_, dkpe, 0, rope_, true);
  be.fill(dkpe0, 0);
  be.rope_backward(dkpe.reshape({n, 1, rope_}), rope.positions, rope.cos, rope.sin, dkpe0.reshape({n, 1, rope_}));
  be.copy_columns(dkpe0, 0, dkva_, kv_rank_, rope_, false);
  be.gemm(dkvb_, true, ckvn_, false, ps_.grad(wkv_b_), 1, 1);
  be.gemm(dkvb_, false, ps_.weight(wkv_b_), false, dckvn_, 1, 0);
  be.fill(dckv_, 0);
  be.rmsnorm_backward(dckvn_, ckv_, ps_.weight(kv_a_norm_), rstd_kv_, dckv_, ps_.grad(kv_a_norm_));
  be.copy_columns(dckv_, 0, dkva_, 0, kv_rank_, false);
  const Tensor xin = tp_enter(tp_, xn_);  // re-gathered with sp: only this rank's rows were kept
  const Tensor dx = tp_.on() ? tp_dinput(tp_) : dxn_;  // this rank's heads' share of d(xin)
  be.gemm(dkva_, true, xin, false, ps_.grad(wkv_a_), 1, 1);
  be.gemm(dkva_, false, ps_.weight(wkv_a_), false, dx, 1, 0);

  // Queries: un-rotate the tail, then back through the q latent (or the direct projection).
  rope_tail(be, dq_, heads_, rope, true);
  const Tensor dq2 = dq_.reshape({n, heads_ * qk_});
  if (q_rank_ > 0) {
    be.gemm(dq2, true, cqn_, false, ps_.grad(wq_b_), 1, 1);
    be.gemm(dq2, false, ps_.weight(wq_b_), false, dcqn_, 1, 0);
    be.fill(dcq_, 0);
    be.rmsnorm_backward(dcqn_, cq_, ps_.weight(q_a_norm_), rstd_q_, dcq_, ps_.grad(q_a_norm_));
    be.gemm(dcq_, true, xin, false, ps_.grad(wq_a_), 1, 1);
    be.gemm(dcq_, false, ps_.weight(wq_a_), false, dx, 1, 1);
  } else {
    be.gemm(dq2, true, xin, false, ps_.grad(wq_), 1, 1);
    be.gemm(dq2, false, ps_.weight(wq_), false, dx, 1, 1);
  }
  if (tp_.on()) {
    be.fill(dxn_, 0);
    tp_enter_backward(be, tp_, dxn_);
  }
  be.rmsnorm_backward(dxn_, x, ps_.weight(norm_), rstd_, dresid, ps_.grad(norm_));
}

}  // namespace sy
