// Helpers for the kernel tests: random inputs rounded to a kernel's storage type, device buffers
// poisoned with NaN, the CPU backend (float64) as the reference, and the error measure.
//
// Every kernel test follows one pattern: inputs drawn in double and rounded to the storage type T
// (float or bf16), so the CPU op in float64 sees exactly the values the kernel sees; outputs
// poisoned with NaN before the launch (an element the kernel does not write stays NaN and fails
// the comparison); accumulated gradients start at random values of the gradients' size and are
// compared as totals (start + gradient), which also checks that a backward kernel adds. Under the emulator every test
// runs the shuffled schedule, so a missing barrier in any kernel shows as a wrong result.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cuda/device_buffer.h"
#include "engine/host_io.h"
#include "engine/cuda/kernels/kernels.h"
#include "tests/test_ops_common.h"

namespace sy::cuda::test {

using optest::Vec;

template <class T> std::vector<T> to_storage(const Vec& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = T(float(v[i]));
  return out;
}

template <class T> Vec from_storage(const std::vector<T>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = double(float(v[i]));
  return out;
}

// The values as T stores them.
template <class T> Vec rounded(const Vec& v) { return from_storage(to_storage<T>(v)); }

template <class T> Vec random(int64_t n, uint64_t seed, double scale = 1.0) {
  return rounded<T>(optest::randn(n, seed, scale));
}

template <class T> DeviceBuffer<T> device(const Vec& v) { return DeviceBuffer<T>(to_storage<T>(v)); }

template <class T> DeviceBuffer<T> poisoned(int64_t n) {
  return DeviceBuffer<T>(std::vector<T>(size_t(n), T(std::numeric_limits<float>::quiet_NaN())));
}

template <class T> Vec fetch(const DeviceBuffer<T>& b) { return from_storage(b.download()); }

// Tolerances of the kernel tests: fp32 outputs within 1e-5 of the float64 reference, bf16 within
// 1e-2 (bf16 keeps 8 significant bits: one rounding is 2^-9 = 2e-3 relative).
template <class T> double tolerance() { return std::is_same_v<T, float> ? 1e-5 : 1e-2; }
template <class T> const char* type_name() { return std::is_same_v<T, float> ? "fp32" : "bf16"; }

// max_i |got_i - want_i| / max(|want_i|, 1% of max_j |want_j|): relative error per element, where
// elements below 1% of the tensor's largest are compared at that level. A reduction's float
// rounding is relative to the size of its terms, not of its result, so elements that cancel to
// near zero cannot meet 1e-5 of themselves: the CPU backend's own float32 RMSNorm backward is 3e-4
// from its float64 under a fixed 1e-3 floor. Any NaN or inf in `got` (an element left unwritten)
// is an infinite error.
inline double max_err(const Vec& got, const Vec& want) {
  EXPECT_EQ(got.size(), want.size());
  double big = 1e-30;
  for (double w : want) big = std::max(big, std::abs(w));
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(got[i] - want[i]) / std::max(std::abs(want[i]), 1e-2 * big));
  }
  return worst;
}

// Records the worst error of one (op, type) over all shapes and prints it once at the end.
class ErrorLog {
 public:
  explicit ErrorLog(std::string what) : what_(std::move(what)) {}
  void add(double e) { worst_ = std::max(worst_, e); }
  double worst() const { return worst_; }
  ~ErrorLog() { std::printf("[ cuda err ] %-48s %.3e\n", what_.c_str(), worst_); }

 private:
  std::string what_;
  double worst_ = 0;
};

// Under the emulator: the shuffled schedule for the duration of a test (seeded, so reruns match).
class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
};

// Backend-level tests: a device tensor of `dt` holding v (a float32 upload, then the backend's
// own conversion), and a tensor's values back in double (through float32 likewise).
inline Tensor to_device(Backend& gpu, const Shape& s, const Vec& v, DType dt) {
  Tensor f = gpu.empty(s, DType::F32);
  upload_f64(gpu, v, f);
  if (dt == DType::F32) return f;
  Tensor t = gpu.empty(s, dt);
  gpu.convert(f, t);
  return t;
}
inline Vec from_device(Backend& gpu, const Tensor& t) {
  if (t.dtype() == DType::F32) return download_f64(gpu, t);
  Tensor f = gpu.empty(t.shape(), DType::F32);
  gpu.convert(t, f);
  return download_f64(gpu, f);
}

}  // namespace sy::cuda::test
