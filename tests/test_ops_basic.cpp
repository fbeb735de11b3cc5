// CPU backend: memory ops, elementwise ops and reductions, GEMM against a naive triple loop, and
// argument validation.
#include <limits>

#include "test_ops_common.h"

namespace sy {
namespace {

using namespace optest;

TEST(OpMemory, UploadDownloadFillCopyConvert) {
  auto be = make_cpu_backend();
  const Vec v = randn(37, 1);
  Tensor a = tensor(*be, {37}, v);
  EXPECT_EQ(host(*be, a), v);
  Tensor b = be->empty({37}, DType::F64);
  be->copy(a, b);
  EXPECT_EQ(host(*be, b), v);
  Tensor f = be->empty({37}, DType::F32);
  be->convert(a, f);
  Tensor back = be->empty({37}, DType::F64);
  be->convert(f, back);
  const Vec r = host(*be, back);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(r[i], double(float(v[i])));
  be->fill(b, 2.5);
  for (double x : host(*be, b)) EXPECT_EQ(x, 2.5);
  Tensor z = be->zeros({3, 4}, DType::I32);
  for (double x : host(*be, z)) EXPECT_EQ(x, 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw()) % 64, 0u);
  EXPECT_THROW(be->copy(a, be->empty({36}, DType::F64)), std::invalid_argument);
  EXPECT_THROW(be->copy(a, f), std::invalid_argument);
}

TEST(OpElementwise, AxpyScaleSumSquaresAllFinite) {
  auto be = make_cpu_backend();
  for (DType dt : {DType::F32, DType::F64}) {
    const int64_t n = 100003;  // several reduction chunks and a ragged tail
    const Vec x = randn(n, 2), y = randn(n, 3);
    Tensor tx = tensor(*be, {n}, x, dt), ty = tensor(*be, {n}, y, dt);
    be->axpy(-0.5, tx, ty);
    be->scale(ty, 3.0);
    const Vec got = host(*be, ty);
    const Vec xs = host(*be, tx);  // as rounded to dt
    double worst = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double yi = dt == DType::F32 ? double(float(y[i])) : y[i];
      worst = std::max(worst, std::abs(got[i] - 3 * (yi - 0.5 * xs[i])));
      ss += xs[i] * xs[i];
    }
    EXPECT_LT(worst, dt == DType::F32 ? 1e-5 : 1e-14);
    EXPECT_NEAR(be->sum_squares(tx), ss, 1e-9 * ss);
    EXPECT_TRUE(be->all_finite(tx));
    Vec bad = x;
    bad[n - 2] = std::numeric_limits<double>::infinity();
    EXPECT_FALSE(be->all_finite(tensor(*be, {n}, bad, dt)));
    bad[n - 2] = std::numeric_limits<double>::quiet_NaN();
    EXPECT_FALSE(be->all_finite(tensor(*be, {n}, bad, dt)));
  }
  EXPECT_THROW(be->axpy(1.0, be->empty({3}, DType::F32), be->empty({3}, DType::F64)), std::invalid_argument);
  EXPECT_THROW(be->axpy(1.0, be->empty({3}, DType::F32), be->empty({4}, DType::F32)), std::invalid_argument);
}

Vec naive_gemm(const Vec& a, bool ta, const Vec& b, bool tb, const Vec& c, int64_t m, int64_t n, int64_t k,
               double alpha, double beta) {
  Vec out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      long double s = 0;
      for (int64_t p = 0; p < k; ++p) s += (long double)(ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
      out[i * n + j] = alpha * double(s) + (beta == 0 ? 0 : beta * c[i * n + j]);
    }
  return out;
}

TEST(OpGemm, AllTransposesAgainstNaive) {
  auto be = make_cpu_backend();
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 130, 31}, {5, 300, 2}, {129, 3, 260}};
  double worst64 = 0, worst32 = 0;
  for (DType dt : {DType::F64, DType::F32})
    for (auto& s : shapes)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
          for (double beta : {0.0, 0.3}) {
            const int64_t m = s[0], n = s[1], k = s[2];
            Vec a = randn(m * k, 10 + m), b = randn(k * n, 20 + n), c = randn(m * n, 30 + k);
            if (dt == DType::F32)  // compare against the same rounded inputs
              for (Vec* v : {&a, &b, &c})
                for (double& x : *v) x = double(float(x));
            Tensor A = tensor(*be, ta ? Shape{k, m} : Shape{m, k}, a, dt);
            Tensor B = tensor(*be, tb ? Shape{n, k} : Shape{k, n}, b, dt);
            Tensor C = tensor(*be, {m, n}, c, dt);
            if (beta == 0) be->fill(C, std::numeric_limits<double>::quiet_NaN());  // must be overwritten
            be->gemm(A, ta, B, tb, C, 0.7, beta);
            const Vec want = naive_gemm(a, ta, b, tb, c, m, n, k, 0.7, beta);
            const Vec got = host(*be, C);
            double w = 0;
            for (size_t i = 0; i < got.size(); ++i)
              w = std::max(w, std::abs(got[i] - want[i]) / std::sqrt(double(k) + 1));
            (dt == DType::F64 ? worst64 : worst32) = std::max(dt == DType::F64 ? worst64 : worst32, w);
          }
  report("gemm f64 vs naive (abs err / sqrt(k))", worst64);
  report("gemm f32 vs naive (abs err / sqrt(k))", worst32);
  EXPECT_LT(worst64, 1e-14);
  EXPECT_LT(worst32, 2e-6);
}

TEST(OpGemm, EmptyInnerDimensionAndLargeF64) {
  auto be = make_cpu_backend();
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor C = tensor(*be, {2, 3}, {1, 2, 3, 4, 5, 6}, dt);
    be->gemm(be->empty({2, 0}, dt), false, be->empty({0, 3}, dt), false, C, 1, 0.5);
    EXPECT_EQ(host(*be, C), (Vec{0.5, 1, 1.5, 2, 2.5, 3}));
  }
  // Large enough for the threaded float64 path.
  const int64_t m = 70, n = 300, k = 90;
  const Vec a = randn(m * k, 1), b = randn(n * k, 2);
  Tensor C = be->empty({m, n}, DType::F64);
  be->gemm(tensor(*be, {m, k}, a), false, tensor(*be, {n, k}, b), true, C, 1, 0);
  EXPECT_LT(max_rel_err(host(*be, C), naive_gemm(a, false, b, true, Vec(m * n), m, n, k, 1, 0), 1.0), 1e-13);
}

TEST(OpGemm, RejectsMismatchedShapesAndDtypes) {
  auto be = make_cpu_backend();
  Tensor a = be->empty({3, 4}, DType::F32), b = be->empty({5, 4}, DType::F32), c = be->empty({3, 5}, DType::F32);
  EXPECT_NO_THROW(be->gemm(a, false, b, true, c, 1, 0));
  EXPECT_THROW(be->gemm(a, false, b, false, c, 1, 0), std::invalid_argument);
  EXPECT_THROW(be->gemm(a, false, b, true, be->empty({3, 4}, DType::F32), 1, 0), std::invalid_argument);
  EXPECT_THROW(be->gemm(a, false, be->empty({5, 4}, DType::F64), true, c, 1, 0), std::invalid_argument);
  EXPECT_THROW(be->gemm(a.reshape({12}), false, b, true, c, 1, 0), std::invalid_argument);
  EXPECT_THROW(be->gemm(a, false, b, true, Tensor(), 1, 0), std::invalid_argument);
  try {
    be->gemm(a, false, b, false, c, 1, 0);
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gemm"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[5, 4]"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sy
