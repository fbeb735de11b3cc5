// Training windows in a seeded order that is a pure function of (seed, sample index): a resumed
// run needs only its sample counter, and any data-parallel rank can compute any other's samples.
//
// The corpus is cut into W = (size - 1) / seq_len non-overlapping windows of seq_len + 1 tokens
// (window w covers tokens [w*seq_len, w*seq_len + seq_len]; neighbouring windows share one token,
// the last target of one being the first input of the next). Sample g belongs to epoch e = g / W
// and reads window perm_e[g % W], where perm_e is a Fisher-Yates shuffle drawn from Philox keyed by
// (seed, e): every window is seen exactly once per epoch, in a fresh order each epoch.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "data/token_file.h"

namespace sy {

class WindowSampler {
 public:
  // Throws ConfigError if the file has fewer than seq_len + 1 tokens.
  WindowSampler(const TokenFile& file, int64_t seq_len, uint64_t seed);

  int64_t windows() const { return windows_; }
  int64_t seq_len() const { return seq_len_; }
  // The window that sample g reads.
  int64_t window_of(int64_t g) const;
  // seq_len inputs and seq_len targets (the inputs shifted by one token) of sample g >= 0.
  void sample(int64_t g, int32_t* inputs, int32_t* targets) const;
  // Window w in file order (validation); 0 <= w < windows().
  void window_in_order(int64_t w, int32_t* inputs, int32_t* targets) const;

 private:
  const TokenFile& file_;
  int64_t seq_len_;
  uint64_t seed_;
  int64_t windows_;
  // Samples arrive in counter order, so only the current epoch's permutation is kept.
  mutable std::mutex mu_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
};

}  // namespace sy
