// A counter-based generator (Philox-4x32-10): the same (seed, stream, counter) gives the same
// numbers on every machine, thread count and backend, which bitwise-reproducible runs need.
#pragma once

#include <cmath>
#include <cstdint>

namespace sy {

class Philox {
 public:
  Philox(uint64_t seed, uint64_t stream) : key_{uint32_t(seed), uint32_t(seed >> 32)}, stream_(stream) {}

  // Four 32-bit words for counter c.
  void block(uint64_t c, uint32_t out[4]) const {
    uint32_t x[4] = {uint32_t(c), uint32_t(c >> 32), uint32_t(stream_), uint32_t(stream_ >> 32)};
    uint32_t k0 = key_[0], k1 = key_[1];
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = uint64_t(0xD2511F53u) * x[0], p1 = uint64_t(0xCD9E8D57u) * x[2];
      const uint32_t y0 = uint32_t(p1 >> 32) ^ x[1] ^ k0, y2 = uint32_t(p0 >> 32) ^ x[3] ^ k1;
      x[0] = y0; x[1] = uint32_t(p1); x[2] = y2; x[3] = uint32_t(p0);
      k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    for (int i = 0; i < 4; ++i) out[i] = x[i];
  }
  uint64_t next_u64() {
    uint32_t w[4];
    block(counter_++, w);
    return (uint64_t(w[0]) << 32) | w[1];
  }
  // Uniform in (0, 1).
  double uniform() { return (double(next_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  // Standard normal by Box-Muller (both numbers of a pair are used).
  double normal() {
    if (has_spare_) { has_spare_ = false; return spare_; }
    const double u1 = uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(6.283185307179586 * u2);
    has_spare_ = true;
    return r * std::cos(6.283185307179586 * u2);
  }
  uint64_t below(uint64_t n) { return next_u64() % n; }  // bias ~n/2^64: irrelevant here

 private:
  uint32_t key_[2];
  uint64_t stream_;
  uint64_t counter_ = 0;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace sy
