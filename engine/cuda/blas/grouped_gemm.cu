// Blas::grouped_gemm (blas.h): the MoE experts' GEMMs as one cublasGemmGroupedBatchedEx.
//
// Each of our row-major problems maps to cuBLAS column-major as in Blas::gemm: C^T = op(B)^T op(A)^T,
// so cuBLAS's (m, n, k) is our (n, m, k), its A our B (and ldb), its B our A (and lda), with the
// transposes unchanged. cuBLAS groups share their sizes, so each run of consecutive problems with
// equal (m, n, k) becomes one cuBLAS group (the experts' weight GEMMs, whose sizes never differ,
// one group; the row-varying ones, a group per expert unless two experts got the same row count).
//
// The matrix pointers go to cuBLAS as device arrays: they are built on the host and copied with one
// cudaMemcpyAsync per call into a device buffer owned by this Blas (A pointers, then B, then C).
// The host buffer is reusable as soon as the copy returns (a pageable source is staged or copied
// before cudaMemcpyAsync returns), and the device buffer's next overwrite is ordered after this
// call's GEMM by the stream; a call on another stream than the last first waits for the last
// call's event, so it cannot overwrite pointers a GEMM on the other stream still reads.
//
// Types: cuBLAS documents the grouped call for Atype = Btype = Ctype (fp32 or bf16, compute 32F),
// not for bf16 inputs with an fp32 C. That combination (fp32 gradient accumulators from bf16
// operands) is tried once; on CUBLAS_STATUS_NOT_SUPPORTED this Blas remembers it and runs those
// calls as one cuBLASLt GEMM per group (Blas::gemm), which supports it.
#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "engine/cuda/blas/blas_internal.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

struct GroupedState {
  cublasHandle_t handle = nullptr;
  void** ptrs = nullptr;  // device: the A, B and C pointer arrays of a call, `capacity` pointers in all
  size_t capacity = 0;
  cudaEvent_t done = nullptr;  // recorded after each grouped call, on `last`
  cudaStream_t last = nullptr;
  bool used = false;
  bool bf16_f32_native = true;  // until cuBLAS answers NOT_SUPPORTED for bf16 inputs with an fp32 C
  // Host arrays, kept between calls so a call allocates nothing.
  std::vector<cublasOperation_t> opa, opb;
  std::vector<int> m, n, k, lda, ldb, ldc, size;
  std::vector<float> alpha, beta;
  std::vector<const void*> host_ptrs;
};

void destroy_grouped(GroupedState* g) {
  if (!g) return;
  if (g->used) cudaEventSynchronize(g->done);  // no GEMM may still read the pointer arrays
  if (g->ptrs) cudaFree(g->ptrs);
  if (g->done) cudaEventDestroy(g->done);
  if (g->handle) cublasDestroy(g->handle);
  delete g;
}

namespace {

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("Blas::grouped_gemm: " + why); }

int to_int(int64_t v, const char* what) {
  if (v > INT_MAX) fail(std::string(what) + " = " + std::to_string(v) + " exceeds cuBLAS's 32-bit sizes");
  return int(v);
}

// C = beta C for a group with nothing to multiply (k = 0); beta 0 clears NaN too.
void scale_only(const GemmGroup& g, float beta, int64_t ldc, GemmType ct, cudaStream_t s) {
  const bool whole = ldc == g.n;  // rows back to back: one launch
  const int64_t rows = whole ? 1 : g.m, len = whole ? g.m * g.n : g.n;
  for (int64_t r = 0; r < rows; ++r) {
    if (ct == GemmType::F32) {
      float* c = static_cast<float*>(g.c) + r * ldc;
      if (beta == 0) fill(c, 0.0f, len, s);
      else scale(c, beta, len, s);
    } else {
      __nv_bfloat16* c = static_cast<__nv_bfloat16*>(g.c) + r * ldc;
      if (beta == 0) fill(c, __nv_bfloat16(0.0f), len, s);
      else scale(c, beta, len, s);
    }
  }
}

}  // namespace

bool Blas::grouped_native(GemmType ab, GemmType ct) const {
  if (ab == GemmType::F32) return ct == GemmType::F32;
  return ct == GemmType::BF16 || !impl_->grouped || impl_->grouped->bf16_f32_native;
}

void Blas::grouped_gemm(bool ta, bool tb, std::span<const GemmGroup> groups, float alpha, int64_t lda, int64_t ldb,
                        float beta, int64_t ldc, GemmType ab, GemmType ct, cudaStream_t s) {
  if (ab == GemmType::F32 && ct == GemmType::BF16) fail("fp32 operands with a bf16 C are not supported");
  // Check every group, then skip the empty ones: a group with m or n of 0 has nothing to write.
  std::vector<GemmGroup> work;
  work.reserve(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    const GemmGroup& g = groups[i];
    const std::string at = "group " + std::to_string(i) + " (m " + std::to_string(g.m) + ", n " +
                           std::to_string(g.n) + ", k " + std::to_string(g.k) + ")";
    if (g.m < 0 || g.n < 0 || g.k < 0) fail(at + ": negative size");
    if (g.m == 0 || g.n == 0) continue;
    if (ldc < g.n) fail(at + ": ldc " + std::to_string(ldc) + " below a row of C");
    if (!g.c) fail(at + ": null C");
    if (g.k == 0) {
      if (beta != 1.0f) scale_only(g, beta, ldc, ct, s);
      continue;
    }
    if (lda < (ta ? g.m : g.k)) fail(at + ": lda " + std::to_string(lda) + " below a row of A");
    if (ldb < (tb ? g.k : g.n)) fail(at + ": ldb " + std::to_string(ldb) + " below a row of B");
    if (!g.a || !g.b) fail(at + ": null A or B");
    work.push_back(g);
  }
  if (work.empty()) return;

  if (!impl_->grouped) {
    auto* st = new GroupedState;
    try {
      SY_CUBLAS_CHECK(cublasCreate(&st->handle));
      SY_CUDA_CHECK(cudaEventCreateWithFlags(&st->done, cudaEventDisableTiming));
    } catch (...) {
      destroy_grouped(st);
      throw;
    }
    impl_->grouped = st;
  }
  GroupedState& st = *impl_->grouped;
  const bool mixed = ab == GemmType::BF16 && ct == GemmType::F32;
  auto per_group = [&] {
    for (const GemmGroup& g : work) gemm(ta, tb, g.m, g.n, g.k, alpha, g.a, lda, g.b, ldb, beta, g.c, ldc, ab, ct, s);
  };
  if (mixed && !st.bf16_f32_native) return per_group();

  // cuBLAS's arguments (column-major): a group per run of equal sizes.
  st.opa.clear(), st.opb.clear(), st.m.clear(), st.n.clear(), st.k.clear(), st.size.clear();
  const size_t w = work.size();
  st.host_ptrs.assign(3 * w, nullptr);
  for (size_t p = 0; p < w; ++p) {
    const GemmGroup& g = work[p];
    st.host_ptrs[p] = g.b;  // cuBLAS's A is our B, its B our A
    st.host_ptrs[w + p] = g.a;
    st.host_ptrs[2 * w + p] = g.c;
    if (p > 0 && g.m == work[p - 1].m && g.n == work[p - 1].n && g.k == work[p - 1].k) {
      ++st.size.back();
      continue;
    }
    st.m.push_back(to_int(g.n, "n"));
    st.n.push_back(to_int(g.m, "m"));
    st.k.push_back(to_int(g.k, "k"));
    st.size.push_back(1);
  }
  const size_t groups_c = st.size.size();
  st.opa.assign(groups_c, tb ? CUBLAS_OP_T : CUBLAS_OP_N);
  st.opb.assign(groups_c, ta ? CUBLAS_OP_T : CUBLAS_OP_N);
  st.lda.assign(groups_c, to_int(ldb, "ldb"));
  st.ldb.assign(groups_c, to_int(lda, "lda"));
  st.ldc.assign(groups_c, to_int(ldc, "ldc"));
  st.alpha.assign(groups_c, alpha);
  st.beta.assign(groups_c, beta);

  if (st.used && st.last != s) SY_CUDA_CHECK(cudaStreamWaitEvent(s, st.done, 0));
  if (st.capacity < 3 * w) {
    if (st.used) SY_CUDA_CHECK(cudaEventSynchronize(st.done));  // the old arrays may still be read
    if (st.ptrs) SY_CUDA_CHECK(cudaFree(st.ptrs));
    st.ptrs = nullptr;
    st.capacity = 0;
    const size_t cap = std::max<size_t>(3 * w, 3 * 64);  // room for 64 experts before the next growth
    SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&st.ptrs), cap * sizeof(void*)));
    st.capacity = cap;
  }
  SY_CUDA_CHECK(cudaMemcpyAsync(st.ptrs, st.host_ptrs.data(), 3 * w * sizeof(void*), cudaMemcpyHostToDevice, s));
  SY_CUBLAS_CHECK(cublasSetStream(st.handle, s));
  const cudaDataType_t t_ab = data_type(ab), t_c = data_type(ct);
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      st.handle, st.opa.data(), st.opb.data(), st.m.data(), st.n.data(), st.k.data(), st.alpha.data(),
      const_cast<const void* const*>(st.ptrs), t_ab, st.lda.data(), const_cast<const void* const*>(st.ptrs + w), t_ab,
      st.ldb.data(), st.beta.data(), st.ptrs + 2 * w, t_c, st.ldc.data(), int(groups_c), st.size.data(),
      CUBLAS_COMPUTE_32F);
  SY_CUDA_CHECK(cudaEventRecord(st.done, s));
  st.last = s;
  st.used = true;
  if (mixed && status == CUBLAS_STATUS_NOT_SUPPORTED) {
    st.bf16_f32_native = false;  // nothing ran: validation precedes any launch
    return per_group();
  }
  cublas_check(status, "cublasGemmGroupedBatchedEx", __FILE__, __LINE__);
}

SY_CUDA_NS_END
}  // namespace sy::cuda
