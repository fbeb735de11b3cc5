#include "trainer/step_guard.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "checkpoint/checkpoint.h"
#include "engine/config_error.h"
#include "trainer/train_state.h"

namespace sy {

DataSkips DataSkips::load(const std::string& out_dir) {
  DataSkips d;
  std::ifstream in(path(out_dir));
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    int64_t at = -1, n = -1;
    std::string rest;
    if (!(s >> at >> n) || (s >> rest) || at < 0 || n < 1)
      throw ConfigError(path(out_dir) + ":" + std::to_string(line_no) + ": expected \"at_step count\" (two integers, " +
                        "count >= 1); fix or delete the line");
    d.add(at, n);
  }
  return d;
}

int64_t DataSkips::window(int64_t i) const {
  int64_t w = i;
  for (const auto& [at, n] : skips_)
    if (at <= i) w += n;
  return w;
}

void DataSkips::save(const std::string& out_dir) const {
  const std::string p = path(out_dir), tmp = p + ".tmp";
  {
    std::ofstream out(tmp);
    out << "# Data windows skipped after bad steps: step index i reads window i + the counts of the lines with "
           "at_step <= i\n# at_step count\n";
    for (const auto& [at, n] : skips_) out << at << " " << n << "\n";
    if (!out.flush()) throw std::runtime_error(tmp + ": cannot write the data skips; check train.out_dir");
  }
  std::filesystem::rename(tmp, p);
}

StepVerdict BadStepGuard::judge(double loss, double grad_sq, int64_t i) {
  if (std::isfinite(loss) && std::isfinite(grad_sq)) {
    run_ = 0;
    updated_since_rollback_ = true;
    return StepVerdict::Update;
  }
  ++skipped_;
  if (run_++ == 0) first_ = i;
  return run_ >= max_bad_ ? StepVerdict::RollBack : StepVerdict::Skip;
}

void BadStepGuard::rolled_back() {
  if (!updated_since_rollback_)
    throw std::runtime_error("steps stay non-finite after rolling back and skipping their data (" +
                             std::to_string(max_bad_) + " bad steps in a row twice); the checkpoint itself diverges: "
                             "lower optim.lr or resume from an older checkpoint (checkpoint.resume=DIR)");
  updated_since_rollback_ = false;
  run_ = 0;
  ++rollbacks_;
}

int64_t load_newest_checkpoint(const std::string& out_dir, Model& model, Optimizer& opt) {
  const std::string dir = find_resume_checkpoint(out_dir);
  if (dir.empty())
    throw std::runtime_error("bad steps in a row and no checkpoint under " + out_dir +
                             " to roll back to; set checkpoint.every_steps so there is one");
  return restore_state(CheckpointReader(dir), model, opt);
}

std::pair<int64_t, int64_t> skip_for_rollback(int64_t ckpt_step, int64_t first, int64_t n) {
  // A checkpoint taken inside the run holds good state (bad steps change nothing): the steps from
  // it on still pass over what is left of the run's windows.
  const int64_t at = std::max(ckpt_step, first);
  return {at, first + n - at};
}

}  // namespace sy
