// MoE token dispatch (gather / combine through the slot table) and the grouped SwiGLU experts.
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {

using namespace cpu;

void CpuBackend::gather_rows(const Tensor& x, const Tensor& src_rows, const Tensor& out) {
  const char* op = "gather_rows";
  const DType dt = check_float(op, {{"x", x}, {"out", out}});
  check_rank(op, {"x", x}, 2);
  check_rank(op, {"src_rows", src_rows}, 1);
  const int64_t n = x.dim(0), d = x.dim(1), m = src_rows.dim(0);
  check_shape(op, {"out", out}, {m, d});
  check_indices(op, {"src_rows", src_rows}, 0, n);
  const int32_t* src = src_rows.data<int32_t>();
  const size_t row_bytes = static_cast<size_t>(d) * dtype_size(dt);
  const auto* xs = static_cast<const std::byte*>(x.raw());
  auto* o = static_cast<std::byte*>(out.raw());
#pragma omp parallel for schedule(static) if (worth_threads(m * d))
  for (int64_t i = 0; i < m; ++i) std::memcpy(o + i * row_bytes, xs + src[i] * row_bytes, row_bytes);
}

namespace {

// dst[i, :] += weight(i * k + j) * src[slots[i, j], :] over the kept slots (slots >= 0): the
// adjoint of gather (unit weights) and the weighted combine share it. Each output row is owned
// by one thread, so there is no race however the slots repeat.
template <class T, class Weight>
void add_slot_rows(const T* src, const int32_t* slots, int64_t n, int64_t k, int64_t d, T* dst, Weight weight) {
#pragma omp parallel for schedule(static) if (worth_threads(n * k * d))
  for (int64_t i = 0; i < n; ++i) {
    T* o = dst + i * d;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t s = slots[i * k + j];
      if (s < 0) continue;
      const T wt = weight(i * k + j);
      const T* r = src + s * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) o[c] += wt * r[c];
    }
  }
}

}  // namespace

void CpuBackend::gather_rows_backward(const Tensor& dxp, const Tensor& slot_rows, const Tensor& dx) {
  const char* op = "gather_rows_backward";
  const DType dt = check_float(op, {{"dxp", dxp}, {"dx", dx}});
  check_rank(op, {"dxp", dxp}, 2);
  check_rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t m = dxp.dim(0), d = dxp.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  check_shape(op, {"dx", dx}, {n, d});
  check_indices(op, {"slot_rows", slot_rows}, 0, m, true);
  const int32_t* slots = slot_rows.data<int32_t>();
  dispatch(dt, [&]<class T>(T) { add_slot_rows(dxp.data<T>(), slots, n, k, d, dx.data<T>(), [](int64_t) { return T(1); }); });
}

void CpuBackend::combine_forward(const Tensor& y, const Tensor& slot_rows, const Tensor& w, const Tensor& out) {
  const char* op = "combine_forward";
  const DType dt = check_float(op, {{"y", y}, {"w", w}, {"out", out}});
  check_rank(op, {"y", y}, 2);
  check_rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t m = y.dim(0), d = y.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  check_shape(op, {"w", w}, {n, k});
  check_shape(op, {"out", out}, {n, d});
  check_indices(op, {"slot_rows", slot_rows}, 0, m, true);
  const int32_t* slots = slot_rows.data<int32_t>();
  dispatch(dt, [&]<class T>(T) {
    const T* ws = w.data<T>();
    add_slot_rows(y.data<T>(), slots, n, k, d, out.data<T>(), [ws](int64_t slot) { return ws[slot]; });
  });
}

void CpuBackend::combine_backward(const Tensor& dout, const Tensor& y, const Tensor& slot_rows, const Tensor& w,
                                  const Tensor& dy, const Tensor& dw) {
  const char* op = "combine_backward";
  const DType dt = check_float(op, {{"dout", dout}, {"y", y}, {"w", w}, {"dy", dy}, {"dw", dw}});
  check_rank(op, {"y", y}, 2);
  check_rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t m = y.dim(0), d = y.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  check_shape(op, {"dout", dout}, {n, d});
  check_shape(op, {"w", w}, {n, k});
  check_shape(op, {"dw", dw}, {n, k});
  check_shape(op, {"dy", dy}, {m, d});
  check_indices(op, {"slot_rows", slot_rows}, 0, m, true);
  const int32_t* slots = slot_rows.data<int32_t>();
  // The scatter into dy runs in parallel over tokens, which is only race-free when no permuted
  // row is claimed by two slots (true of every dispatch plan): check rather than corrupt.
  {
    std::vector<char> seen(static_cast<size_t>(m), 0);
    for (int64_t i = 0; i < n * k; ++i) {
      if (slots[i] < 0) continue;
      if (seen[slots[i]]) fail(op, "permuted row " + std::to_string(slots[i]) + " appears in two slots");
      seen[slots[i]] = 1;
    }
  }
  dispatch(dt, [&]<class T>(T) {
    const T *g = dout.data<T>(), *ys = y.data<T>(), *ws = w.data<T>();
    T *dys = dy.data<T>(), *dws = dw.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n * k * d))
    for (int64_t i = 0; i < n; ++i) {
      const T* gr = g + i * d;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t s = slots[i * k + j];
        if (s < 0) continue;
        const T wt = ws[i * k + j];
        const T* yr = ys + s * d;
        T* dyr = dys + s * d;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < d; ++c) {
          dyr[c] += wt * gr[c];
          dot += gr[c] * yr[c];
        }
        dws[i * k + j] += dot;
      }
    }
  });
}

namespace {

// Shapes shared by both grouped ops; returns {E, D, F}.
struct GroupDims {
  int64_t e, d, f;
};

GroupDims check_grouped(const char* op, const Tensor& x, std::span<const int64_t> offsets,
                        std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13, const Tensor& a) {
  const int64_t e = int64_t(w13.size());
  if (int64_t(w2.size()) != e || int64_t(offsets.size()) != e + 1)
    fail(op, std::to_string(w13.size()) + " w13, " + std::to_string(w2.size()) + " w2 and " +
                 std::to_string(offsets.size()) + " offsets (need E, E, E+1)");
  if (e == 0) fail(op, "no experts");
  check_rank(op, {"x", x}, 2);
  check_rank(op, {"w13[0]", w13[0]}, 2);
  const int64_t m = x.dim(0), d = x.dim(1), f = w13[0].dim(0) / 2;
  const DType dt = check_float(op, {{"x", x}, {"h13", h13}, {"a", a}});
  for (int64_t i = 0; i < e; ++i) {
    check_dtype(op, {"w13[e]", w13[i]}, dt);
    check_dtype(op, {"w2[e]", w2[i]}, dt);
    check_shape(op, {"w13[e]", w13[i]}, {2 * f, d});
    check_shape(op, {"w2[e]", w2[i]}, {f, d});
  }
  check_shape(op, {"h13", h13}, {m, 2 * f});
  check_shape(op, {"a", a}, {m, f});
  bool ok = offsets[0] == 0 && offsets[e] == m;
  for (int64_t i = 0; i < e; ++i) ok = ok && offsets[i] <= offsets[i + 1];
  if (!ok) {
    std::string s;
    for (int64_t o : offsets) s += (s.empty() ? "" : ", ") + std::to_string(o);
    fail(op, "offsets [" + s + "] must rise from 0 to the row count of " + describe({{"x", x}}));
  }
  return {e, d, f};
}

}  // namespace

namespace {

// Row chunks of the expert groups, as (expert, first row, row count): the unit of parallel work
// for the row-wise parts of the experts. Each chunk runs its GEMMs on one thread and keeps its
// [rows, 2F] activations in that core's cache between the GEMMs and the SwiGLU.
struct Chunk {
  int64_t e, lo, rows;
};

std::vector<Chunk> row_chunks(std::span<const int64_t> offsets, int64_t rows_per_chunk) {
  std::vector<Chunk> c;
  for (size_t e = 0; e + 1 < offsets.size(); ++e)
    for (int64_t lo = offsets[e]; lo < offsets[e + 1]; lo += rows_per_chunk)
      c.push_back({int64_t(e), lo, std::min(rows_per_chunk, offsets[e + 1] - lo)});
  return c;
}

constexpr int64_t kExpertChunk = 128;

// The biases (or their gradients) of the E experts: none, or b13[e] [2F] and b2[e] [D] for all.
void check_expert_biases(const char* op, std::span<const Tensor> b13, std::span<const Tensor> b2, int64_t e,
                         int64_t d, int64_t f, DType dt) {
  if (b13.empty() && b2.empty()) return;
  if (int64_t(b13.size()) != e || int64_t(b2.size()) != e)
    fail(op, std::to_string(b13.size()) + " gate|up and " + std::to_string(b2.size()) + " down biases for " +
                 std::to_string(e) + " experts (need none or E of each)");
  for (int64_t g = 0; g < e; ++g) {
    check_dtype(op, {"b13[e]", b13[g]}, dt);
    check_dtype(op, {"b2[e]", b2[g]}, dt);
    check_shape(op, {"b13[e]", b13[g]}, {2 * f});
    check_shape(op, {"b2[e]", b2[g]}, {d});
  }
}

// rows x [rows, w] += b [w] on every row.
template <class T> void add_row_bias(T* x, const T* b, int64_t rows, int64_t w) {
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) x[r * w + c] += b[c];
  }
}

// db [w] += the column sums of x [rows, w], summed in double.
template <class T> void add_column_sums(const T* x, T* db, int64_t rows, int64_t w) {
  std::vector<double> acc(static_cast<size_t>(w), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < w; ++c) acc[size_t(c)] += double(x[r * w + c]);
  for (int64_t c = 0; c < w; ++c) db[c] += T(acc[size_t(c)]);
}

}  // namespace

void CpuBackend::grouped_swiglu_forward(const Tensor& x, std::span<const int64_t> offsets,
                                        std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                        const Tensor& a, const Tensor& y, const ExpertOpts& opts) {
  const char* op = "grouped_swiglu_forward";
  const auto [e, d, f] = check_grouped(op, x, offsets, w13, w2, h13, a);
  const DType dt = check_float(op, {{"x", x}, {"y", y}});
  check_shape(op, {"y", y}, x.shape());
  check_glu(op, opts.glu);
  check_expert_biases(op, opts.b13, opts.b2, e, d, f, dt);
  const bool bias = !opts.b13.empty();
  const std::vector<Chunk> chunks = row_chunks(offsets, kExpertChunk);
  dispatch(dt, [&]<class T>(T) {
    const T* xs = x.data<T>();
    T *hs = h13.data<T>(), *as = a.data<T>(), *ys = y.data<T>();
#pragma omp parallel for schedule(dynamic)
    for (size_t c = 0; c < chunks.size(); ++c) {
      const auto [g, lo, rows] = chunks[c];
      gemm_raw(false, true, rows, 2 * f, d, T(1), xs + lo * d, d, w13[g].data<T>(), d, T(0), hs + lo * 2 * f, 2 * f);
      if (bias) add_row_bias(hs + lo * 2 * f, opts.b13[g].data<T>(), rows, 2 * f);
      swiglu_rows(hs + lo * 2 * f, as + lo * f, rows, f, opts.glu);
      gemm_raw(false, false, rows, d, f, T(1), as + lo * f, f, w2[g].data<T>(), d, T(0), ys + lo * d, d);
      if (bias) add_row_bias(ys + lo * d, opts.b2[g].data<T>(), rows, d);
    }
  });
}

void CpuBackend::grouped_swiglu_backward(const Tensor& dy, const Tensor& x, std::span<const int64_t> offsets,
                                         std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                         const Tensor& a, const Tensor& dx, std::span<const Tensor> dw13,
                                         std::span<const Tensor> dw2, const ExpertOpts& opts,
                                         std::span<const Tensor> db13, std::span<const Tensor> db2) {
  const char* op = "grouped_swiglu_backward";
  const auto [e, d, f] = check_grouped(op, x, offsets, w13, w2, h13, a);
  const DType dt = check_float(op, {{"x", x}, {"dy", dy}, {"dx", dx}});
  check_shape(op, {"dy", dy}, x.shape());
  check_shape(op, {"dx", dx}, x.shape());
  if (int64_t(dw13.size()) != e || int64_t(dw2.size()) != e)
    fail(op, std::to_string(dw13.size()) + " dw13 and " + std::to_string(dw2.size()) + " dw2 for " +
                 std::to_string(e) + " experts");
  for (int64_t g = 0; g < e; ++g) {
    check_dtype(op, {"dw13[e]", dw13[g]}, dt);
    check_dtype(op, {"dw2[e]", dw2[g]}, dt);
    check_shape(op, {"dw13[e]", dw13[g]}, {2 * f, d});
    check_shape(op, {"dw2[e]", dw2[g]}, {f, d});
  }
  check_glu(op, opts.glu);
  check_expert_biases(op, db13, db2, e, d, f, dt);
  if (opts.b13.empty() != db13.empty())
    fail(op, "bias gradients must be given exactly when the forward pass had biases");
  const std::vector<Chunk> chunks = row_chunks(offsets, kExpertChunk);
  const int64_t m = x.dim(0);
  dispatch(dt, [&]<class T>(T) {
    const T *g_y = dy.data<T>(), *xs = x.data<T>(), *hs = h13.data<T>(), *as = a.data<T>();
    T* dxs = dx.data<T>();
    // dh13 of every row, [M, 2F]: the row-wise pass writes it, the weight gradients read it.
    T* dh = this->template scratch<T>(static_cast<size_t>(m * 2 * f));
    // Row-wise, chunk-parallel: da = dy w2^T (per-thread buffer), dh13 = swiglu'(da), dx += dh13 w13.
#pragma omp parallel
    {
      std::vector<T> da(static_cast<size_t>(kExpertChunk * f));
#pragma omp for schedule(dynamic)
      for (size_t c = 0; c < chunks.size(); ++c) {
        const auto [g, lo, rows] = chunks[c];
        gemm_raw(false, true, rows, f, d, T(1), g_y + lo * d, d, w2[g].data<T>(), d, T(0), da.data(), f);
        swiglu_rows_backward(da.data(), hs + lo * 2 * f, dh + lo * 2 * f, rows, f, false, opts.glu);
        gemm_raw(false, false, rows, d, 2 * f, T(1), dh + lo * 2 * f, 2 * f, w13[g].data<T>(), d, T(1), dxs + lo * d, d);
      }
    }
    // Weight gradients sum over an expert's rows: one GEMM per expert on all threads.
    for (int64_t g = 0; g < e; ++g) {
      const int64_t lo = offsets[g], rows = offsets[g + 1] - lo;
      if (rows == 0) continue;
      gemm_raw(true, false, f, d, rows, T(1), as + lo * f, f, g_y + lo * d, d, T(1), dw2[g].data<T>(), d);
      gemm_raw(true, false, 2 * f, d, rows, T(1), dh + lo * 2 * f, 2 * f, xs + lo * d, d, T(1), dw13[g].data<T>(), d);
      if (!db13.empty()) {
        add_column_sums(dh + lo * 2 * f, db13[g].data<T>(), rows, 2 * f);
        add_column_sums(g_y + lo * d, db2[g].data<T>(), rows, d);
      }
    }
  });
}

}  // namespace sy
