// The optimizer over a model's flat parameter buffer: global grad-norm clipping, then AdamW
// (decoupled weight decay, on matrices only by default) or plain SGD, at the scheduled rate.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/params.h"
#include "optim/optim_config.h"

namespace sy {

struct OptimStepResult {
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  bool clipped = false;
};

class Optimizer {
 public:
  Optimizer(const OptimConfig& cfg, ParamStore& ps, Backend& be, int64_t total_steps);
  // Applies one update from the gradients in ps (which it leaves clipped, not zeroed).
  OptimStepResult step();
  int64_t steps_taken() const { return step_; }
  // AdamW moments (undefined for SGD): flat, the same layout as the parameters.
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  // Bytes of optimizer state this process holds.
  int64_t state_bytes() const;

 private:
  struct Range {
    int64_t offset, numel;
    bool decay;
  };
  OptimConfig cfg_;
  ParamStore& ps_;
  Backend& be_;
  int64_t total_steps_;
  int64_t step_ = 0;
  std::vector<Range> ranges_;  // consecutive parameters with the same decay rule, merged
  Tensor m_, v_;
};

}  // namespace sy
