#include "optim/optimizer.h"

#include <cmath>
#include <stdexcept>

#include "optim/lr_schedule.h"

namespace sy {

Optimizer::Optimizer(const OptimConfig& cfg, ParamStore& ps, Backend& be, int64_t total_steps)
    : cfg_(cfg), ps_(ps), be_(be), total_steps_(total_steps) {
  for (const ParamInfo& p : ps.infos()) {
    bool decay = p.kind == ParamKind::Matrix || (p.kind == ParamKind::Norm && cfg.decay_norms) ||
                 (p.kind == ParamKind::Embedding && cfg.decay_embeddings);
    if (!ranges_.empty() && ranges_.back().decay == decay && ranges_.back().offset + ranges_.back().numel == p.offset)
      ranges_.back().numel += p.numel;
    else
      ranges_.push_back({p.offset, p.numel, decay});
  }
  if (cfg.name == "adamw") {
    m_ = be.zeros(ps.values().shape(), ps.values().dtype());
    v_ = be.zeros(ps.values().shape(), ps.values().dtype());
  } else if (cfg.name != "sgd") {
    throw std::invalid_argument("unknown optimizer " + cfg.name);
  }
}

int64_t Optimizer::state_bytes() const { return m_.defined() ? int64_t(m_.nbytes() + v_.nbytes()) : 0; }

OptimStepResult Optimizer::step() {
  OptimStepResult r;
  const Tensor& g = ps_.grads();
  r.grad_norm = std::sqrt(be_.sum_squares(g));
  if (cfg_.grad_clip > 0 && r.grad_norm > cfg_.grad_clip) {
    be_.scale(g, cfg_.grad_clip / (r.grad_norm + 1e-6));
    r.clipped = true;
  }
  r.lr = learning_rate(cfg_, step_, total_steps_);
  ++step_;
  for (const Range& rg : ranges_) {
    const Tensor p = ps_.values().view(rg.offset, {rg.numel});
    const Tensor gr = g.view(rg.offset, {rg.numel});
    if (cfg_.name == "sgd") {
      be_.axpy(-r.lr, gr, p);
      continue;
    }
    AdamWArgs a;
    a.lr = r.lr;
    a.beta1 = cfg_.beta1;
    a.beta2 = cfg_.beta2;
    a.eps = cfg_.eps;
    a.weight_decay = rg.decay ? cfg_.weight_decay : 0.0;
    a.step = step_;
    be_.adamw_update(p, gr, m_.view(rg.offset, {rg.numel}), v_.view(rg.offset, {rg.numel}), a);
  }
  return r;
}

}  // namespace sy
