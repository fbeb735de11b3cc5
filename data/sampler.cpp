#include "data/sampler.h"

#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine/config_error.h"
#include "engine/rng.h"

namespace sy {

namespace {

// Keeps the sampler's Philox streams apart from the ones parameter initialisation draws with the
// same seed.
constexpr uint64_t kSamplerStream = 0x5a3e000000000000ull;

}  // namespace

WindowSampler::WindowSampler(const TokenFile& file, int64_t seq_len, uint64_t seed)
    : file_(file), seq_len_(seq_len), seed_(seed), windows_(0) {
  if (seq_len <= 0)
    throw ConfigError("model.seq_len=" + std::to_string(seq_len) + " must be positive");
  if (file.size() < uint64_t(seq_len) + 1)
    throw ConfigError(file.path() + ": " + std::to_string(file.size()) + " tokens, fewer than model.seq_len+1=" +
                      std::to_string(seq_len + 1) + " needed for one window; use a larger token file or a smaller model.seq_len");
  windows_ = int64_t((file.size() - 1) / uint64_t(seq_len));
}

int64_t WindowSampler::window_of(int64_t g) const {
  if (g < 0) throw std::out_of_range("sample index " + std::to_string(g) + " is negative");
  const int64_t epoch = g / windows_;
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch != cached_epoch_) {
    perm_.resize(size_t(windows_));
    std::iota(perm_.begin(), perm_.end(), int64_t(0));
    Philox rng(seed_, kSamplerStream + uint64_t(epoch));
    for (int64_t i = windows_ - 1; i > 0; --i)
      std::swap(perm_[size_t(i)], perm_[size_t(rng.below(uint64_t(i) + 1))]);
    cached_epoch_ = epoch;
  }
  return perm_[size_t(g % windows_)];
}

void WindowSampler::sample(int64_t g, int32_t* inputs, int32_t* targets) const {
  window_in_order(window_of(g), inputs, targets);
}

void WindowSampler::window_in_order(int64_t w, int32_t* inputs, int32_t* targets) const {
  if (w < 0 || w >= windows_)
    throw std::out_of_range(file_.path() + ": window " + std::to_string(w) + " out of range [0, " +
                            std::to_string(windows_) + ")");
  const uint64_t start = uint64_t(w) * uint64_t(seq_len_);
  file_.copy(start, uint64_t(seq_len_), inputs);
  file_.copy(start + 1, uint64_t(seq_len_), targets);
}

}  // namespace sy
