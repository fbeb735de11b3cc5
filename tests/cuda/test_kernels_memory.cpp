// The strided column-block copy (memory_kernels.cu) and CudaBackend::copy_columns against the CPU
// backend's copy_columns in float64: copies and accumulations at odd widths, leading dimensions and
// row counts past a block of threads; the columns around the block must survive.
#include <string>

#include "engine/cuda/backend/cuda_backend.h"
#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

struct Block {
  int64_t rows, cs, cd, src_col, dst_col, width;
  std::string str() const {
    return std::to_string(rows) + " rows [" + std::to_string(cs) + "] col " + std::to_string(src_col) + " -> [" +
           std::to_string(cd) + "] col " + std::to_string(dst_col) + " width " + std::to_string(width);
  }
};
// One element; odd sizes; a whole row; the last columns of a wide source; 300 rows of 257 (past the
// grid-stride launch's blocks of 256); width 0 and no rows (nothing written).
const Block kBlocks[] = {{1, 1, 1, 0, 0, 1},       {7, 13, 9, 3, 2, 5},     {3, 6, 6, 0, 0, 6},
                         {33, 100, 64, 37, 10, 50}, {300, 257, 258, 1, 0, 256}, {5, 8, 8, 4, 2, 0},
                         {0, 4, 4, 0, 0, 4}};

// dst's start: random, with the block itself NaN for a copy (every element must be overwritten);
// the CPU op then gives the wanted result from the same start.
Vec start(const Block& c, bool accumulate, uint64_t seed, bool bf16) {
  Vec d = bf16 ? random<__nv_bfloat16>(c.rows * c.cd, seed) : random<float>(c.rows * c.cd, seed);
  if (!accumulate)
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t j = 0; j < c.width; ++j) d[size_t(r * c.cd + c.dst_col + j)] = std::nan("");
  return d;
}

Vec reference(const Block& c, const Vec& src, const Vec& dst0, bool accumulate) {
  auto cpu = make_cpu_backend();
  Tensor d = tensor(*cpu, {c.rows, c.cd}, dst0);
  cpu->copy_columns(tensor(*cpu, {c.rows, c.cs}, src), c.src_col, d, c.dst_col, c.width, accumulate);
  return host(*cpu, d);
}

// A copy moves bits: equal exactly. A sum rounds once (float, or bf16 from a float sum).
void expect_match(const Vec& got, const Vec& want, bool accumulate, double tol, const std::string& what,
                  ErrorLog& log) {
  ASSERT_EQ(got.size(), want.size()) << what;
  if (!accumulate) {
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << what << " element " << i;
    return;
  }
  const double e = max_err(got, want);
  log.add(e);
  EXPECT_LT(e, tol) << what;
}

template <class T> void check_kernel(ErrorLog& log) {
  uint64_t seed = 2100;
  for (const Block& c : kBlocks)
    for (bool acc : {false, true}) {
      const std::string what = c.str() + (acc ? " accumulate" : " copy");
      const Vec src = random<T>(c.rows * c.cs, ++seed), dst0 = start(c, acc, ++seed, !std::is_same_v<T, float>);
      auto gs = device<T>(src), gd = device<T>(dst0);
      copy_columns<T>(gs.get() + c.src_col, c.cs, gd.get() + c.dst_col, c.cd, c.rows, c.width, acc, nullptr);
      expect_match(fetch(gd), reference(c, src, dst0, acc), acc, tolerance<T>(), what, log);
    }
}

class CudaCopyColumns : public KernelTest {};
TEST_F(CudaCopyColumns, Fp32MatchesCpu) {
  ErrorLog log("copy_columns fp32 (accumulate)");
  check_kernel<float>(log);
}
TEST_F(CudaCopyColumns, Bf16MatchesCpu) {
  ErrorLog log("copy_columns bf16 (accumulate)");
  check_kernel<__nv_bfloat16>(log);
}


// The backend op: the same blocks through tensors, in both dtypes.
TEST_F(CudaCopyColumns, BackendMatchesCpu) {
  auto gpu = make_backend();
  ErrorLog log("copy_columns backend fp32 / bf16 (accumulate)");
  uint64_t seed = 2300;
  for (DType dt : {DType::F32, DType::BF16})
    for (const Block& c : kBlocks)
      for (bool acc : {false, true}) {
        const bool bf = dt == DType::BF16;
        const Vec src = bf ? random<__nv_bfloat16>(c.rows * c.cs, ++seed) : random<float>(c.rows * c.cs, ++seed);
        const Vec dst0 = start(c, acc, ++seed, bf);
        Tensor d = to_device(*gpu, {c.rows, c.cd}, dst0, dt);
        gpu->copy_columns(to_device(*gpu, {c.rows, c.cs}, src, dt), c.src_col, d, c.dst_col, c.width, acc);
        expect_match(from_device(*gpu, d), reference(c, src, dst0, acc), acc, bf ? 1e-2 : 1e-5,
                     c.str() + (bf ? " bf16" : " fp32") + (acc ? " accumulate" : " copy"), log);
      }
}

// One-line errors naming the op: ranks, dtypes, row counts and every bound.
TEST_F(CudaCopyColumns, BackendChecksArguments) {
  auto gpu = make_backend();
  const DType f = DType::F32;
  Tensor src = gpu->zeros({4, 6}, f), dst = gpu->zeros({4, 5}, f);
  auto fails = [&](const Tensor& s, int64_t sc, const Tensor& d, int64_t dc, int64_t w) {
    try {
      gpu->copy_columns(s, sc, d, dc, w, false);
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind("copy_columns: ", 0), 0u) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      return true;
    }
    return false;
  };
  EXPECT_FALSE(fails(src, 1, dst, 0, 5));  // the last five columns into the whole of dst
  EXPECT_TRUE(fails(src, 2, dst, 0, 5));   // past src's columns
  EXPECT_TRUE(fails(src, 0, dst, 1, 5));   // past dst's
  EXPECT_TRUE(fails(src, -1, dst, 0, 1));
  EXPECT_TRUE(fails(src, 0, dst, -1, 1));
  EXPECT_TRUE(fails(src, 0, dst, 0, -1));
  EXPECT_TRUE(fails(src, 0, gpu->zeros({3, 5}, f), 0, 1));          // rows differ
  EXPECT_TRUE(fails(src, 0, gpu->zeros({4, 5}, DType::BF16), 0, 1));  // dtypes differ
  EXPECT_TRUE(fails(gpu->zeros({24}, f), 0, dst, 0, 1));            // rank 2 only
  EXPECT_TRUE(fails(src, 0, gpu->zeros({4, 5, 1}, f), 0, 1));
  EXPECT_TRUE(fails(src, 0, dst, 0, int64_t(1) << 62));  // no overflow into an accepted range
}

}  // namespace
}  // namespace sy::cuda::test
