// The comparison every multi-rank equivalence test makes against its 1-rank reference: every
// step's loss and every final parameter within 1e-5 relative (float32).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "run_harness.h"

namespace sy::testing {

// The scale-sensitive optimizer every equivalence test also runs: plain SGD at lr 0.1, no
// clipping, constant schedule (an error in a gradient's scale shows in the parameters at once).
inline constexpr const char* kPlainSgd =
    " --set optim.name=sgd --set optim.lr=0.1 --set optim.grad_clip=0 --set optim.schedule=constant"
    " --set optim.warmup_steps=0";
// The TP and PP tests' model on top of tests/recipes/tiny-test.toml: four KV heads (tp = 4 splits
// them), layer 0 dense (d_ff 64), the others MoE with a shared expert.
inline constexpr const char* kDenseAndSharedExpertModel =
    " --set model.n_kv_heads=4 --set model.first_dense_layers=1 --set model.d_ff=64 --set model.n_shared_experts=1";

// Returns the worst relative parameter error (L2 over each tensor), for the [measured] lines.
inline double expect_same_run(const RunDir& d, const std::string& ref, const std::string& got, size_t steps = 10) {
  const auto a = d.losses(ref), b = d.losses(got);
  EXPECT_EQ(a.size(), steps) << d.file(ref + ".log");
  EXPECT_EQ(b.size(), steps) << d.file(got + ".log");
  if (a.size() != steps || b.size() != steps) return INFINITY;
  double worst_loss = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_LE(std::abs(a[i] - b[i]), 1e-5 * std::abs(a[i])) << got << " step " << i + 1 << ": " << b[i] << " vs " << a[i];
    worst_loss = std::max(worst_loss, std::abs(a[i] - b[i]) / std::abs(a[i]));
  }
  const auto wa = d.weights(ref), wb = d.weights(got);
  EXPECT_EQ(wa.size(), wb.size());
  double worst = 0;
  for (const auto& [name, arr] : wa) {
    if (!wb.count(name)) {
      ADD_FAILURE() << got << " lacks " << name;
      continue;
    }
    const auto x = arr.to_f64(), y = wb.at(name).to_f64();
    double diff = 0, norm = 0, maxabs = 0, maxdiff = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      diff += (x[i] - y[i]) * (x[i] - y[i]);
      norm += x[i] * x[i];
      maxabs = std::max(maxabs, std::abs(x[i]));
      maxdiff = std::max(maxdiff, std::abs(x[i] - y[i]));
    }
    const double rel = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
    EXPECT_LE(rel, 1e-5) << got << " " << name;
    EXPECT_LE(maxdiff, 1e-5 * maxabs) << got << " " << name;
    worst = std::max(worst, rel);
  }
  std::printf("[measured] %s vs %s: worst loss relative error %.2e, worst parameter relative error %.2e\n", got.c_str(),
              ref.c_str(), worst_loss, worst);
  return worst;
}

// Two runs that must agree to the bit: every step's loss, aux and z losses and gradient norm as
// written (17 significant digits), and every final parameter's bytes.
inline void expect_bit_identical(const RunDir& d, const std::string& a, const std::string& b, size_t steps) {
  for (const char* key : {"loss", "aux_loss", "z_loss", "grad_norm"}) {
    const auto x = d.field(a, key), y = d.field(b, key);
    EXPECT_EQ(x.size(), steps) << key << "\n" << d.file(a + ".log");
    EXPECT_EQ(x, y) << b << " vs " << a << ": " << key;
  }
  const auto wa = d.weights(a), wb = d.weights(b);
  EXPECT_EQ(wa.size(), wb.size());
  EXPECT_FALSE(wa.empty());
  for (const auto& [name, arr] : wa) {
    auto it = wb.find(name);
    if (it == wb.end()) {
      ADD_FAILURE() << b << " lacks " << name;
      continue;
    }
    EXPECT_TRUE(arr.bytes == it->second.bytes) << b << " vs " << a << ": " << name << " differs";
  }
}

}  // namespace sy::testing
