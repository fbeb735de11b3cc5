#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "optim/lr_schedule.h"

namespace sy {

Optimizer::Optimizer(const OptimConfig& cfg, ParamStore& ps, Backend& be, int64_t total_steps, OptimShard shard)
    : cfg_(cfg), ps_(ps), be_(be), total_steps_(total_steps), begin_(shard.begin),
      end_(shard.end < 0 ? ps.total_numel() : std::min(shard.end, ps.total_numel())) {
  if (begin_ < 0 || begin_ > end_) throw std::invalid_argument("optimizer shard out of range");
  grads_ = shard.grads.defined() ? shard.grads : ps.grads().view(begin_, {end_ - begin_});
  reduce_sum_squares_ = shard.reduce_sum_squares ? shard.reduce_sum_squares : [](double x) { return x; };
  for (const ParamInfo& p : ps.infos()) {
    const int64_t lo = std::max(p.offset, begin_), hi = std::min(p.offset + p.numel, end_);
    if (lo >= hi) continue;
    const bool decay = p.kind == ParamKind::Matrix || (p.kind == ParamKind::Norm && cfg.decay_norms) ||
                       (p.kind == ParamKind::Embedding && cfg.decay_embeddings);
    if (!ranges_.empty() && ranges_.back().decay == decay && ranges_.back().offset + ranges_.back().numel == lo)
      ranges_.back().numel += hi - lo;
    else
      ranges_.push_back({lo, hi - lo, decay});
  }
  if (cfg.name == "adamw") {
    m_ = be.zeros({end_ - begin_}, ps.values().dtype());
    v_ = be.zeros({end_ - begin_}, ps.values().dtype());
  } else if (cfg.name != "sgd") {
    throw std::invalid_argument("unknown optimizer " + cfg.name);
  }
}

int64_t Optimizer::state_bytes() const { return m_.defined() ? int64_t(m_.nbytes() + v_.nbytes()) : 0; }

OptimStepResult Optimizer::step() {
  OptimStepResult r;
  r.grad_norm = std::sqrt(reduce_sum_squares_(grads_.numel() ? be_.sum_squares(grads_) : 0.0));
  // Clipping is a factor on the gradients, applied inside the update rather than as a separate
  // pass over the whole buffer.
  double grad_scale = 1;
  if (cfg_.grad_clip > 0 && r.grad_norm > cfg_.grad_clip) {
    grad_scale = cfg_.grad_clip / (r.grad_norm + 1e-6);
    r.clipped = true;
  }
  r.lr = learning_rate(cfg_, step_, total_steps_);
  ++step_;
  for (const Range& rg : ranges_) {
    const Tensor p = ps_.values().view(rg.offset, {rg.numel});
    const Tensor g = grads_.view(rg.offset - begin_, {rg.numel});
    if (cfg_.name == "sgd") {
      be_.axpy(-r.lr * grad_scale, g, p);
      continue;
    }
    AdamWArgs a;
    a.lr = r.lr;
    a.beta1 = cfg_.beta1;
    a.beta2 = cfg_.beta2;
    a.eps = cfg_.eps;
    a.weight_decay = rg.decay ? cfg_.weight_decay : 0.0;
    a.step = step_;
    a.grad_scale = grad_scale;
    be_.adamw_update(p, g, m_.view(rg.offset - begin_, {rg.numel}), v_.view(rg.offset - begin_, {rg.numel}), a);
  }
  return r;
}

}  // namespace sy
