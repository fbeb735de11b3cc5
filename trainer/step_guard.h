// The NaN/Inf guard. A step whose loss or gradient norm is not finite is skipped: no optimizer
// update, no router-bias update, on every rank alike (the verdict is taken from values every rank
// holds after the same all-reduce). After train.max_bad_steps bad steps in a row the job rolls
// back to its newest checkpoint and skips the data windows of the bad run, as is done by hand for
// loss spikes in large runs today.
//
// Which window a step reads is kept in <out_dir>/data_skips.txt, one "at_step count" line per
// rollback: step index i (0-based) reads window i + the counts of every line with at_step <= i.
// The file outlives the process, so a job restarted from any checkpoint skips the same windows.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sy {

class Model;
class Optimizer;

class DataSkips {
 public:
  // Reads <out_dir>/data_skips.txt; an absent file means no skips. ConfigError if malformed.
  static DataSkips load(const std::string& out_dir);
  static std::string path(const std::string& out_dir) { return out_dir + "/data_skips.txt"; }
  // The data window (in steps' worth of samples) that step index `i` reads.
  int64_t window(int64_t i) const;
  void add(int64_t at_step, int64_t count) { skips_.emplace_back(at_step, count); }
  // Atomic replace (write, then rename). One rank calls it.
  void save(const std::string& out_dir) const;
  const std::vector<std::pair<int64_t, int64_t>>& entries() const { return skips_; }

 private:
  std::vector<std::pair<int64_t, int64_t>> skips_;
};

enum class StepVerdict { Update, Skip, RollBack };

class BadStepGuard {
 public:
  explicit BadStepGuard(int64_t max_bad_steps) : max_bad_(max_bad_steps) {}
  // `loss` and `grad_sq` (a sum of squared gradients) as every rank holds them after the step's
  // all-reduce, so every rank reaches the same verdict. `i`: the step's index (0-based).
  StepVerdict judge(double loss, double grad_sq, int64_t i);
  // The bad run that asked for a rollback: step indices [run_first(), run_first() + run_length()).
  int64_t run_first() const { return first_; }
  int64_t run_length() const { return run_; }
  // After the rollback: the run is forgotten. Throws std::runtime_error when no step was applied
  // since the previous rollback (the checkpoint itself gives bad steps: skipping data cannot help).
  void rolled_back();
  int64_t skipped_total() const { return skipped_; }
  int64_t rollbacks() const { return rollbacks_; }

 private:
  int64_t max_bad_;
  int64_t run_ = 0, first_ = -1;
  int64_t skipped_ = 0, rollbacks_ = 0;
  bool updated_since_rollback_ = true;
};

// Loads the newest checkpoint under out_dir that verifies into the model and optimizer and returns
// its step; std::runtime_error naming the fix when there is none.
int64_t load_newest_checkpoint(const std::string& out_dir, Model& model, Optimizer& opt);

// The skip a rollback to checkpoint step `ckpt_step` adds for the bad run [first, first + n): the
// good steps before the run replay their own windows; from the run on, its windows are passed over.
std::pair<int64_t, int64_t> skip_for_rollback(int64_t ckpt_step, int64_t first, int64_t n);

}  // namespace sy
