#include "engine/layers/ffn_block.h"

#include <cmath>
#include <string>

namespace sy {

FfnBlock::FfnBlock(ParamStore& ps, const ModelConfig& cfg, int64_t layer, ExpertRange held_experts, TpPlace tp)
    : ps_(ps), cfg_(cfg) {
  const std::string p = "layers." + std::to_string(layer);
  norm_ = ps.add(p + ".ffn_norm.weight", {cfg.d_model}, ParamKind::Norm, 0, -1,
                 {tp.seq() ? TpSplit::Partial : TpSplit::Replicated, tp.rank(), tp.size()});
  if (cfg.layer_is_moe(layer)) {
    moe_ = std::make_unique<MoeLayer>(ps, cfg, layer, held_experts, tp);
  } else {
    const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
    dense_ = std::make_unique<SwiGluMlp>(ps, p + ".mlp", cfg.d_model, cfg.d_ff, cfg.init_std, out_std, tp, cfg.glu());
  }
}

void FfnBlock::allocate_buffers(Backend& be, DType dt) {
  if (moe_) moe_->allocate_buffers(be, dt);
}

void FfnBlock::ensure(Backend& be, int64_t n, DType dt) {
  if (xn_.defined() && xn_.dim(0) == n && xn_.dtype() == dt) return;
  MemScope kept(be, MemCategory::Activations);
  xn_ = be.empty({n, cfg_.d_model}, dt);
  rstd_ = be.empty({n}, accum_dtype(dt));
  MemScope scratch(be, MemCategory::Workspace);
  dxn_ = be.empty({n, cfg_.d_model}, dt);
}

MoeForwardStats FfnBlock::forward(Backend& be, const Tensor& x, const Tensor& out) {
  ensure(be, x.dim(0), x.dtype());
  be.rmsnorm_forward(x, ps_.weight(norm_), cfg_.norm_eps, xn_, rstd_);
  be.copy(x, out);
  if (moe_) return moe_->forward(be, xn_, out);
  dense_->forward(be, xn_, out);
  return {};
}

void FfnBlock::backward(Backend& be, const Tensor& x, const Tensor& dresid, double loss_scale) {
  be.fill(dxn_, 0);
  if (moe_)
    moe_->backward(be, dresid, xn_, dxn_, loss_scale);
  else
    dense_->backward(be, dresid, xn_, dxn_);
  be.rmsnorm_backward(dxn_, x, ps_.weight(norm_), rstd_, dresid, ps_.grad(norm_));
}

}  // namespace sy
