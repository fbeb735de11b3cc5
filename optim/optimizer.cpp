#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "optim/lr_schedule.h"

namespace sy {

Optimizer::Optimizer(const OptimConfig& cfg, ParamStore& ps, Backend& be, int64_t total_steps, OptimShard shard)
    : cfg_(cfg), ps_(ps), be_(be), total_steps_(total_steps), pieces_(std::move(shard.pieces)) {
  if (pieces_.empty()) {
    for (SegmentKind k : {SegmentKind::Replicated, SegmentKind::TpRows, SegmentKind::Expert}) {
      const ParamSegment& seg = ps.segment(k);
      if (seg.numel > 0) pieces_.push_back({seg.begin, seg.begin + seg.numel, Tensor()});
    }
  }
  reduce_sum_squares_ = shard.reduce_sum_squares;
  norm_excluded_ = shard.norm_excluded;
  std::sort(norm_excluded_.begin(), norm_excluded_.end());
  if (!reduce_sum_squares_)
    reduce_sum_squares_ = [](const std::vector<double>& x) {
      double sum = 0;
      for (double v : x) sum += v;
      return sum;
    };
  int64_t state = 0;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    OptimPiece& pc = pieces_[i];
    if (pc.begin < 0 || pc.begin > pc.end || pc.end > ps.values().numel())
      throw std::invalid_argument("optimizer piece out of range");
    if (!pc.grads.defined()) pc.grads = ps.grads().view(pc.begin, {pc.end - pc.begin});
    state_offsets_.push_back(state);
    state += pc.end - pc.begin;
    for (const ParamInfo& p : ps.infos()) {
      const int64_t lo = std::max(p.offset, pc.begin), hi = std::min(p.offset + p.numel, pc.end);
      if (lo >= hi) continue;
      const bool decay = p.kind == ParamKind::Matrix || ((p.kind == ParamKind::Norm || p.kind == ParamKind::Bias) && cfg.decay_norms) ||
                         (p.kind == ParamKind::Embedding && cfg.decay_embeddings);
      Range* last = ranges_.empty() ? nullptr : &ranges_.back();
      if (last && last->piece == i && last->decay == decay && last->offset + last->numel == lo)
        last->numel += hi - lo;
      else
        ranges_.push_back({lo, hi - lo, i, decay});
    }
  }
  if (cfg.name == "adamw") {
    MemScope scope(be, MemCategory::OptimizerState);
    m_ = be.zeros({state}, ps.values().dtype());
    v_ = be.zeros({state}, ps.values().dtype());
  } else if (cfg.name != "sgd") {
    throw std::invalid_argument("unknown optimizer " + cfg.name);
  }
}

int64_t Optimizer::state_bytes() const { return m_.defined() ? int64_t(m_.nbytes() + v_.nbytes()) : 0; }

OptimStepResult Optimizer::step() {
  OptimStepResult r;
  std::vector<double> local;
  for (const OptimPiece& pc : pieces_) {
    if (pc.grads.numel() == 0) {
      local.push_back(0.0);
      continue;
    }
    // The piece's gradient minus the excluded ranges: the sum over the parts between them.
    double sq = 0;
    int64_t at = pc.begin;
    auto add_up_to = [&](int64_t end) {
      if (end > at) sq += be_.sum_squares(pc.grads.view(at - pc.begin, {end - at}));
    };
    for (const auto& [lo, hi] : norm_excluded_) {
      if (hi <= pc.begin || lo >= pc.end) continue;
      add_up_to(std::max(lo, pc.begin));
      at = std::max(at, std::min(hi, pc.end));
    }
    add_up_to(pc.end);
    local.push_back(sq);
  }
  r.grad_norm = std::sqrt(reduce_sum_squares_(local));
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
    const OptimPiece& pc = pieces_[rg.piece];
    const Tensor g = pc.grads.view(rg.offset - pc.begin, {rg.numel});
    const int64_t at = state_offsets_[rg.piece] + rg.offset - pc.begin;
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
    be_.adamw_update(p, g, m_.view(at, {rg.numel}), v_.view(at, {rg.numel}), a);
  }
  return r;
}

}  // namespace sy
