// The optimizer over a model's flat parameter buffer: global grad-norm clipping, then AdamW
// (decoupled weight decay, on matrices only by default) or plain SGD, at the scheduled rate.
// It may own only a shard [begin, end) of the flat buffer (ZeRO): then it holds moments for
// that shard alone, reads the shard's gradients from wherever the caller keeps them, and a
// caller-supplied reduction turns its shard's sum of squares into the global one.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/params.h"
#include "optim/optim_config.h"

namespace sy {

struct OptimShard {
  int64_t begin = 0, end = -1;  // elements of the flat buffer; end -1: all of it
  Tensor grads;                 // [end - begin] gradients of the shard; undefined: ps.grads() view
  // Local sum of squares -> global sum of squares (identity when the optimizer sees every gradient).
  std::function<double(double)> reduce_sum_squares;
};

struct OptimStepResult {
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  bool clipped = false;
};

class Optimizer {
 public:
  Optimizer(const OptimConfig& cfg, ParamStore& ps, Backend& be, int64_t total_steps, OptimShard shard = {});
  // Applies one update to the shard from its gradients (which it leaves as they were: clipping is
  // folded into the update).
  OptimStepResult step();
  int64_t steps_taken() const { return step_; }
  // After loading a checkpoint's moments: the schedule and bias corrections continue from here.
  void restore_steps_taken(int64_t steps) { step_ = steps; }
  // AdamW moments of the shard (undefined for SGD).
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  // Bytes of optimizer state this process holds.
  int64_t state_bytes() const;

 private:
  struct Range {
    int64_t offset, numel;  // in flat-buffer elements, inside the shard
    bool decay;
  };
  OptimConfig cfg_;
  ParamStore& ps_;
  Backend& be_;
  int64_t total_steps_;
  int64_t step_ = 0;
  int64_t begin_, end_;
  Tensor grads_;
  std::function<double(double)> reduce_sum_squares_;
  std::vector<Range> ranges_;  // consecutive parameters with the same decay rule, merged
  Tensor m_, v_;
};

}  // namespace sy
