// The optimizer over a model's flat parameter buffer: global grad-norm clipping, then AdamW
// (decoupled weight decay, on matrices only by default) or plain SGD, at the scheduled rate.
// It may own only pieces of the flat buffer (ZeRO: a shard of the dense segment and one of the
// expert segment): then it holds moments for those pieces alone, reads their gradients from
// wherever the caller keeps them, and a caller-supplied reduction turns its pieces' sums of
// squares into the global one.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/params.h"
#include "optim/optim_config.h"

namespace sy {

// A range [begin, end) of the flat buffer the optimizer updates.
struct OptimPiece {
  int64_t begin = 0, end = 0;
  Tensor grads;  // [end - begin] gradients of the range; undefined: the ParamStore's view
};

struct OptimShard {
  std::vector<OptimPiece> pieces;  // empty: every parameter of both segments
  // The pieces' local sums of squares (one each) -> the global sum of squares. Unset: their sum
  // (when the optimizer sees every gradient).
  std::function<double(const std::vector<double>&)> reduce_sum_squares;
  // Flat ranges [begin, end) of the parameter buffer left out of the gradient norm: a copy whose
  // gradient another rank counts (a tied embedding's second copy on the last pipeline stage).
  std::vector<std::pair<int64_t, int64_t>> norm_excluded;
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
  // The pieces this optimizer updates; piece i's moments are exp_avg()[state_offset(i) + ...].
  const std::vector<OptimPiece>& pieces() const { return pieces_; }
  int64_t state_offset(size_t piece) const { return state_offsets_.at(piece); }
  // Bytes of optimizer state this process holds.
  int64_t state_bytes() const;

 private:
  struct Range {
    int64_t offset, numel;  // in flat-buffer elements, inside one piece
    size_t piece;
    bool decay;
  };
  OptimConfig cfg_;
  ParamStore& ps_;
  Backend& be_;
  int64_t total_steps_;
  int64_t step_ = 0;
  std::vector<OptimPiece> pieces_;
  std::vector<int64_t> state_offsets_;
  std::function<double(const std::vector<double>&)> reduce_sum_squares_;
  std::vector<std::pair<int64_t, int64_t>> norm_excluded_;  // sorted
  std::vector<Range> ranges_;  // consecutive parameters with the same decay rule, merged
  Tensor m_, v_;
};

}  // namespace sy
