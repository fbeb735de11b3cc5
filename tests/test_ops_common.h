// Helpers for the CPU backend's op tests: host<->tensor plumbing, central finite differences and
// the error measures the tests assert on.
//
// Relative error, everywhere below: |a - b| / max(|a|, |b|, floor), floor 1e-3 unless stated, so
// gradients that are essentially zero are compared absolutely at the 1e-3 * tolerance level.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/host_io.h"
#include "engine/rng.h"

namespace sy::optest {

using Vec = std::vector<double>;
using Outputs = std::vector<Vec>;

inline Vec randn(int64_t n, uint64_t seed, double scale = 1.0) {
  Philox rng(seed, 3);
  Vec v(static_cast<size_t>(n));
  for (double& x : v) x = scale * rng.normal();
  return v;
}

inline Tensor tensor(Backend& be, const Shape& s, const Vec& v, DType dt = DType::F64) {
  Tensor t = be.empty(s, dt);
  upload_f64(be, v, t);
  return t;
}

inline Tensor tensor_i32(Backend& be, const Shape& s, const std::vector<int32_t>& v) {
  Tensor t = be.empty(s, DType::I32);
  be.upload(v.data(), t);
  return t;
}

inline Vec host(Backend& be, const Tensor& t) { return download_f64(be, t); }

inline double dot(const Vec& a, const Vec& b) {
  long double s = 0;  // the finite differences subtract two of these: keep their rounding small
  for (size_t i = 0; i < a.size(); ++i) s += (long double)a[i] * b[i];
  return double(s);
}

inline double rel_err(double a, double b, double floor = 1e-3) {
  return std::abs(a - b) / std::max({std::abs(a), std::abs(b), floor});
}

inline double max_rel_err(const Vec& a, const Vec& b, double floor = 1e-3) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, rel_err(a[i], b[i], floor));
  return worst;
}

inline void report(const std::string& what, double err) {
  std::printf("[ op err   ] %-44s %.3e\n", what.c_str(), err);
}

// Fourth-order central differences of loss() with respect to every element of every input (loss
// reads the inputs through the pointers), against the analytic gradients; returns the max relative
// error. The stencil (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h has O(h^4) truncation, so
// h = 1e-4 leaves both truncation (~1e-17) and rounding (~eps |L| / h) far below the 1e-6 bar,
// where the two-point stencil at h = 1e-6 sits at ~1e-8 rounding noise relative to |L|.
inline double fd_check(const std::vector<Vec*>& inputs, const std::vector<Vec>& analytic,
                       const std::function<double()>& loss, double h = 1e-4) {
  EXPECT_EQ(inputs.size(), analytic.size());
  double worst = 0;
  for (size_t t = 0; t < inputs.size(); ++t) {
    Vec& x = *inputs[t];
    EXPECT_EQ(x.size(), analytic[t].size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double keep = x[i];
      auto at = [&](double dx) {
        x[i] = keep + dx;
        const double l = loss();
        x[i] = keep;
        return l;
      };
      const double numeric = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
      const double err = rel_err(analytic[t][i], numeric);
      if (err > 1e-6)
        ADD_FAILURE() << "input " << t << " element " << i << ": analytic " << analytic[t][i] << " numeric "
                      << numeric;
      worst = std::max(worst, err);
    }
  }
  return worst;
}

// Backward ops accumulate: starting the gradients at random values, runs `backward` twice and
// checks the second call added what the first did. Returns the first call's contribution.
inline Outputs accumulated_grads(Backend& be, const std::vector<Tensor>& grads, const std::function<void()>& backward,
                                 const std::string& what) {
  Outputs start;
  for (size_t i = 0; i < grads.size(); ++i) {
    start.push_back(randn(grads[i].numel(), 900 + i));
    upload_f64(be, start.back(), grads[i]);
  }
  backward();
  Outputs once;
  for (size_t i = 0; i < grads.size(); ++i) {
    Vec g = host(be, grads[i]);
    for (size_t j = 0; j < g.size(); ++j) g[j] -= start[i][j];
    once.push_back(std::move(g));
  }
  backward();
  double worst = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    const Vec g = host(be, grads[i]);
    for (size_t j = 0; j < g.size(); ++j)
      worst = std::max(worst, std::abs(g[j] - start[i][j] - 2 * once[i][j]) / std::max(1.0, std::abs(g[j])));
  }
  EXPECT_LT(worst, 1e-13) << what << ": a second backward call did not add the same gradient again";
  return once;
}

// Runs a forward in float32 and float64 on the same inputs; returns max |a - b| / max(1, |b|).
inline double f32_vs_f64(const std::function<Outputs(DType)>& forward) {
  const Outputs a = forward(DType::F32), b = forward(DType::F64);
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[i].size(); ++j)
      worst = std::max(worst, std::abs(a[i][j] - b[i][j]) / std::max(1.0, std::abs(b[i][j])));
  return worst;
}

inline double dot_outputs(const Outputs& r, const Outputs& out) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += dot(r[i], out[i]);
  return s;
}

}  // namespace sy::optest
