// Embedding and MoE permutation kernels (gather, its adjoint, combine and its backward) against
// the CPU backend in float64, on dispatch plans with dropped slots and with every slot dropped;
// the experts' bias rows and bias gradients against their definition in double.
#include <algorithm>
#include <numeric>

#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

// A plan: slots [n, k] of permuted rows (-1 where capacity dropped the slot), every kept slot a
// distinct row, and src_rows [m] the token of each permuted row.
struct Plan {
  std::vector<int32_t> slots, src_rows;
};

Plan make_plan(int64_t n, int k, double keep, uint64_t seed) {
  Philox rng(seed, 5);
  Plan p;
  p.slots.assign(size_t(n * k), -1);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n * k; ++i)
    if (rng.uniform() < keep) kept.push_back(i);
  std::vector<int32_t> order(kept.size());
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.next_u64() % i)]);
  p.src_rows.resize(kept.size());
  for (size_t r = 0; r < kept.size(); ++r) {
    p.slots[kept[r]] = order[r];
    p.src_rows[order[r]] = int32_t(kept[r] / k);
  }
  return p;
}

template <class T> void check_permute(ErrorLog& log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 1000;
  struct C {
    int64_t n;
    int k;
    int64_t d;
    double keep;
  };
  for (const C c : {C{1, 1, 1, 1.0}, C{7, 2, 33, 0.7}, C{40, 4, 100, 0.8}, C{5, 3, 17, 0.0}, C{3, 8, 257, 0.5}}) {
    const int64_t n = c.n, d = c.d;
    const int k = c.k;
    const Plan p = make_plan(n, k, c.keep, ++seed);
    const int64_t m = int64_t(p.src_rows.size());
    const Vec x = random<T>(n * d, ++seed), y = random<T>(m * d, ++seed), w = random<float>(n * k, ++seed);
    const Vec dxp = random<T>(m * d, ++seed), dx0 = random<T>(n * d, ++seed), out0 = random<T>(n * d, ++seed);
    const Vec dout = random<T>(n * d, ++seed), dy0 = random<T>(m * d, ++seed), dw0 = random<float>(n * k, ++seed);
    Tensor tslots = optest::tensor_i32(*cpu, {n, k}, p.slots), tsrc = optest::tensor_i32(*cpu, {m}, p.src_rows);
    DeviceBuffer<int32_t> gslots(p.slots), gsrc(p.src_rows);
    auto gx = device<T>(x), gy = device<T>(y), gdxp = device<T>(dxp), gdout = device<T>(dout);
    auto gw = device<float>(w);
    double err = 0;

    Tensor out = cpu->empty({m, d}, DType::F64);
    cpu->gather_rows(tensor(*cpu, {n, d}, x), tsrc, out);
    auto gout = poisoned<T>(m * d);
    gather_rows<T>(gx.get(), gsrc.get(), gout.get(), m, d, nullptr);
    err = std::max(err, max_err(fetch(gout), host(*cpu, out)));

    Tensor dx = tensor(*cpu, {n, d}, dx0);
    cpu->gather_rows_backward(tensor(*cpu, {m, d}, dxp), tslots, dx);
    auto gdx = device<T>(dx0);
    gather_rows_backward<T>(gdxp.get(), gslots.get(), gdx.get(), n, k, d, nullptr);
    err = std::max(err, max_err(fetch(gdx), host(*cpu, dx)));

    Tensor comb = tensor(*cpu, {n, d}, out0);
    cpu->combine_forward(tensor(*cpu, {m, d}, y), tslots, tensor(*cpu, {n, k}, w), comb);
    auto gcomb = device<T>(out0);
    combine_forward<T>(gy.get(), gslots.get(), gw.get(), gcomb.get(), n, k, d, nullptr);
    err = std::max(err, max_err(fetch(gcomb), host(*cpu, comb)));

    Tensor dy = tensor(*cpu, {m, d}, dy0), dw = tensor(*cpu, {n, k}, dw0);
    cpu->combine_backward(tensor(*cpu, {n, d}, dout), tensor(*cpu, {m, d}, y), tslots, tensor(*cpu, {n, k}, w), dy, dw);
    auto gdy = device<T>(dy0);
    auto gdw = device<float>(dw0);
    combine_backward<T>(gdout.get(), gy.get(), gslots.get(), gw.get(), gdy.get(), gdw.get(), n, k, d, nullptr);
    err = std::max({err, max_err(fetch(gdy), host(*cpu, dy)), max_err(fetch(gdw), host(*cpu, dw))});
    log.add(err);
    EXPECT_LT(err, tolerance<T>()) << "n " << n << " k " << k << " d " << d << " kept rows " << m;
  }
}

class CudaPermute : public KernelTest {};
TEST_F(CudaPermute, Fp32MatchesCpu) {
  ErrorLog e("gather / adjoint / combine / combine bwd fp32");
  check_permute<float>(e);
}
TEST_F(CudaPermute, Bf16MatchesCpu) {
  ErrorLog e("gather / adjoint / combine / combine bwd bf16");
  check_permute<__nv_bfloat16>(e);
}

template <class T> void check_embedding(ErrorLog& log) {
  auto cpu = make_cpu_backend();
  for (auto [v, d, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 33, 50}, {100, 300, 37}}) {
    const Vec table = random<T>(v * d, 1100 + d), dout = random<T>(n * d, 1200 + d), dt0 = random<float>(v * d, 1300 + d);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    // Repeats, and every fifth id -1 (a token of another vocabulary shard: zero row, no gradient).
    for (int64_t i = 0; i < n; ++i) ids[i] = i % 5 == 4 ? -1 : int32_t((i * i * 31 + 7) % v);
    Tensor tids = optest::tensor_i32(*cpu, {n}, ids), out = cpu->empty({n, d}, DType::F64);
    cpu->embedding_forward(tensor(*cpu, {v, d}, table), tids, out);
    DeviceBuffer<int32_t> gids(ids);
    auto gt = device<T>(table), gout = poisoned<T>(n * d);
    embedding_forward<T>(gt.get(), gids.get(), gout.get(), n, d, nullptr);
    Tensor dt = tensor(*cpu, {v, d}, dt0);
    cpu->embedding_backward(tensor(*cpu, {n, d}, dout), tids, dt);
    auto gdout = device<T>(dout);
    auto gdt = device<float>(dt0);
    embedding_backward<T>(gdout.get(), gids.get(), gdt.get(), n, d, nullptr);
    // The gradient table is float in both cases: its sums are held to the fp32 tolerance.
    const double ef = max_err(fetch(gout), host(*cpu, out)), eb = max_err(fetch(gdt), host(*cpu, dt));
    log.add(std::max(ef, eb));
    EXPECT_EQ(ef, 0.0);  // a copy
    EXPECT_LT(eb, 1e-5);
  }
}

class CudaEmbedding : public KernelTest {};
TEST_F(CudaEmbedding, Fp32MatchesCpu) {
  ErrorLog e("embedding fwd+bwd fp32");
  check_embedding<float>(e);
}
TEST_F(CudaEmbedding, Bf16MatchesCpu) {
  ErrorLog e("embedding fwd+bwd bf16 (fp32 grad table)");
  check_embedding<__nv_bfloat16>(e);
}

// Expert row ranges for the bias kernels: `first` rows before expert 0 and 3 after the last belong
// to no expert (they must keep their values), rows[g] per expert (0: empty).
struct BiasCase {
  int64_t w, first;
  std::vector<int64_t> rows;
};

std::vector<BiasCase> bias_cases() {
  std::vector<int64_t> many(70);  // three launches of 32 experts: the middle one all empty (no launch)
  for (int64_t g = 0; g < 70; ++g) many[g] = g < 32 ? (g * 7) % 5 : g < 64 ? 0 : 11 + g % 3;
  return {{1, 0, {1}}, {31, 2, {5, 0, 9}}, {33, 0, {0, 1, 17, 0, 40}}, {8, 1, {100}}, {300, 0, many}};
}

template <class T> void check_expert_bias(ErrorLog& rows_log, ErrorLog& grad_log) {
  uint64_t seed = 1400;
  for (const BiasCase& c : bias_cases()) {
    const int64_t e = int64_t(c.rows.size()), w = c.w;
    std::vector<int64_t> off{c.first};
    for (int64_t r : c.rows) off.push_back(off.back() + r);
    const int64_t total = off.back() + 3;
    std::vector<Vec> b(static_cast<size_t>(e)), db0(static_cast<size_t>(e));
    std::vector<DeviceBuffer<T>> gb;
    std::vector<DeviceBuffer<float>> gdb;
    std::vector<const T*> bp;
    std::vector<float*> dbp;
    for (int64_t g = 0; g < e; ++g) {
      b[g] = random<T>(w, ++seed), db0[g] = random<float>(w, ++seed);
      gb.push_back(device<T>(b[g])), gdb.push_back(device<float>(db0[g]));
      bp.push_back(gb.back().get()), dbp.push_back(gdb.back().get());
    }
    const Vec x = random<T>(total * w, ++seed);
    auto expert_of = [&](int64_t r) {
      for (int64_t g = 0; g < e; ++g)
        if (r >= off[g] && r < off[g + 1]) return g;
      return int64_t(-1);
    };
    // Overwrite: expert rows become their bias exactly, the others keep x (NaN would show).
    auto gx = device<T>(x);
    expert_bias_rows<T>(gx.get(), bp.data(), off.data(), e, w, false, nullptr);
    Vec want(x);
    for (int64_t r = 0; r < total; ++r)
      if (const int64_t g = expert_of(r); g >= 0)
        for (int64_t k = 0; k < w; ++k) want[r * w + k] = b[g][k];
    EXPECT_EQ(fetch(gx), want) << "w " << w << " experts " << e;
    // Accumulate: x + bias, one rounding.
    gx = device<T>(x);
    expert_bias_rows<T>(gx.get(), bp.data(), off.data(), e, w, true, nullptr);
    for (int64_t r = 0; r < total; ++r)
      if (const int64_t g = expert_of(r); g >= 0)
        for (int64_t k = 0; k < w; ++k) want[r * w + k] = x[r * w + k] + b[g][k];
    const double er = max_err(fetch(gx), want);
    rows_log.add(er);
    EXPECT_LT(er, tolerance<T>()) << "w " << w << " experts " << e;

    // Gradient: db[g] += column sums of expert g's rows (float sums: the fp32 bound for both types).
    gx = device<T>(x);
    expert_bias_grad<T>(gx.get(), dbp.data(), off.data(), e, w, nullptr);
    double eg = 0;
    std::vector<Vec> first_run(static_cast<size_t>(e));
    for (int64_t g = 0; g < e; ++g) {
      Vec sum = db0[g];
      for (int64_t r = off[g]; r < off[g + 1]; ++r)
        for (int64_t k = 0; k < w; ++k) sum[k] += x[r * w + k];
      first_run[g] = fetch(gdb[g]);
      if (c.rows[g] == 0) {
        EXPECT_EQ(first_run[g], db0[g]) << "empty expert " << g << " touched";
      }
      eg = std::max(eg, max_err(first_run[g], sum));
    }
    grad_log.add(eg);
    EXPECT_LT(eg, 1e-5) << "w " << w << " experts " << e;
    // Deterministic: the same start gives the same bits again (another shuffled schedule).
    for (int64_t g = 0; g < e; ++g) gdb[g] = device<float>(db0[g]), dbp[g] = gdb[g].get();
    expert_bias_grad<T>(gx.get(), dbp.data(), off.data(), e, w, nullptr);
    for (int64_t g = 0; g < e; ++g) EXPECT_EQ(fetch(gdb[g]), first_run[g]) << "expert " << g;
  }
}

class CudaExpertBias : public KernelTest {};
TEST_F(CudaExpertBias, Fp32MatchesDefinition) {
  ErrorLog r("expert bias rows (+=) fp32"), g("expert bias grad (column sums) fp32");
  check_expert_bias<float>(r, g);
}
TEST_F(CudaExpertBias, Bf16MatchesDefinition) {
  ErrorLog r("expert bias rows (+=) bf16"), g("expert bias grad (column sums) bf16 -> fp32");
  check_expert_bias<__nv_bfloat16>(r, g);
}

}  // namespace
}  // namespace sy::cuda::test
