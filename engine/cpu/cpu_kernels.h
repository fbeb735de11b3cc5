// Internal helpers shared by the CPU backend's op files: argument checks, dtype dispatch, the
// vectorisable exp the float kernels rely on, and raw strided GEMM entry points.
#pragma once

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "engine/backend.h"
#include "engine/tensor.h"

// A failing oneDNN call means this backend passed it something inconsistent (a bad leading
// dimension, ...): report where, since the status alone does not say which call it was.
#define SY_DNNL_CHECK(call) ::sy::cpu::dnnl_check((call), #call, __FILE__, __LINE__)

// Loops heavy in exp ask for 16 lanes: GCC's cost model for -march=native on AVX-512 parts picks
// 256-bit vectors by default, which halves their throughput.
#define SY_SIMD16 _Pragma("omp simd simdlen(16)")
#define SY_SIMD16_SUM(var) _Pragma(SY_STR(omp simd simdlen(16) reduction(+ : var)))
#define SY_SIMD16_MAX(var) _Pragma(SY_STR(omp simd simdlen(16) reduction(max : var)))
#define SY_STR(x) #x

namespace sy::cpu {

void dnnl_check(dnnl_status_t status, const char* call, const char* file, int line);

// ---- argument checks --------------------------------------------------------------------------
struct Arg {
  const char* name;
  const Tensor& t;
};

// "name float32[2, 3]" for each argument, comma separated; "name (undefined)" for undefined ones.
std::string describe(std::initializer_list<Arg> args);
[[noreturn]] void fail(const char* op, const std::string& what);

// All defined host tensors of one float dtype (F32 or F64); returns it.
DType check_float(const char* op, std::initializer_list<Arg> args);
void check_dtype(const char* op, Arg a, DType dt);
void check_shape(const char* op, Arg a, const Shape& want);
void check_rank(const char* op, Arg a, int rank);
void check_numel(const char* op, Arg a, int64_t numel);
// Every value of an I32 tensor lies in [lo, hi); negative ones pass when allow_negative (dropped slots).
void check_indices(const char* op, Arg a, int64_t lo, int64_t hi, bool allow_negative = false);

template <class F> decltype(auto) dispatch(DType dt, F&& f) {
  if (dt == DType::F32) return f(float{});
  return f(double{});
}

// ---- math -------------------------------------------------------------------------------------
// exp for float that the compiler can vectorise (std::exp calls a scalar libm routine without
// -ffast-math): x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 Taylor polynomial (relative
// error ~5e-9, below float's half ulp), 2^n assembled in the exponent bits. Inputs below -87.3
// return exactly 0, so masked softmax entries vanish; NaN propagates. Rounding to n uses the
// 1.5 * 2^23 shifter instead of std::floor, which GCC does not vectorise under trapping math.
inline float exp_fast(float x) {
  const float lo = x < -87.3f ? -87.3f : x;
  const float xc = lo > 88.0f ? 88.0f : lo;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float shifted = xc * 1.44269504088896341f + kShift;
  const float n = shifted - kShift;
  const int32_t ni = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kShift);
  const float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>((ni + 127) << 23);
  const float y = p * scale;
  return x < -87.3f ? 0.0f : (x != x ? x : y);
}
inline float vexp(float x) { return exp_fast(x); }
inline double vexp(double x) { return std::exp(x); }
template <class T> inline T sigmoid(T x) { return T(1) / (T(1) + vexp(-x)); }

// ---- GEMM on raw row-major strided matrices ----------------------------------------------------
// C[m x n] = alpha * op(A) op(B) + beta * C; beta == 0 overwrites C whatever it held. Inside an
// OpenMP parallel region both run on the calling thread only.
void gemm_raw(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_raw(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
              const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

// ---- SwiGLU rows (shared by the dense op and the grouped experts) ------------------------------
// h [rows, 2F] -> out [rows, F].
template <class T> void swiglu_rows(const T* h, T* out, int64_t rows, int64_t f, const Backend::GluOpts& glu);
// GluOpts within range (limit >= 0; alpha 1 for the plain form), or a one-line error.
void check_glu(const char* op, const Backend::GluOpts& glu);
// dh = (or += with accumulate) d/dh of <dout, swiglu(h)>.
template <class T>
void swiglu_rows_backward(const T* dout, const T* h, T* dh, int64_t rows, int64_t f, bool accumulate,
                          const Backend::GluOpts& glu);

// Rounds a pointer up to a 64-byte boundary. Scratch rows that start on a cache line spare the
// vectorised loops their scalar alignment prologue (which costs most in exp-heavy loops).
template <class T> T* align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// Row-parallel loops only pay for a thread team when there is enough work to share.
inline bool worth_threads(int64_t work) { return work >= (1 << 14) && !omp_in_parallel(); }

}  // namespace sy::cpu
