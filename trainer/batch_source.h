// Turns token files into micro-batches. Training windows come from the seeded sampler, indexed by
// a global sample counter (so a run's data order depends only on the seed and the step, and a
// resumed or data-parallel run can compute any rank's samples); validation windows are read in
// file order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "data/sampler.h"
#include "data/token_file.h"
#include "engine/model.h"

namespace sy {

class BatchSource {
 public:
  BatchSource(const std::string& path, int64_t seq_len, uint64_t seed, int64_t model_vocab);
  // Sequences [first_sample, first_sample + batch) of the sampler's order.
  HostBatch sampled(int64_t first_sample, int64_t batch) const;
  // Windows [first_window, first_window + batch) in file order.
  HostBatch in_order(int64_t first_window, int64_t batch) const;
  int64_t windows() const;
  int64_t seq_len() const { return seq_len_; }

 private:
  std::unique_ptr<TokenFile> file_;
  std::unique_ptr<WindowSampler> sampler_;
  int64_t seq_len_;
};

}  // namespace sy
