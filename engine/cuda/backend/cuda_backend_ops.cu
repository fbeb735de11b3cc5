// CudaBackend: the layer ops, each a shape check and a launch of its kernel (kernels.h).
#include <cmath>

#include "engine/cuda/backend/cuda_backend_impl.h"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

using args::f32;
using args::floats;
using args::fail;
using args::rank;
using args::shape;

namespace {
void i32(const char* op, args::Arg a) { args::check(op, a, DType::I32); }
}  // namespace

void CudaBackend::embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out) {
  const char* op = "embedding_forward";
  const DType dt = floats(op, {{"table", table}, {"out", out}});
  i32(op, {"ids", ids});
  rank(op, {"table", table}, 2);
  const int64_t n = ids.numel(), d = table.dim(1);
  shape(op, {"out", out}, {n, d});
  SY_WITH_T(dt, cuda::embedding_forward(ptr<T>(table), ids.data<int32_t>(), ptr<T>(out), n, d, stream_));
}

void CudaBackend::embedding_backward(const Tensor& dout, const Tensor& ids, const Tensor& dtable) {
  const char* op = "embedding_backward";
  const DType dt = floats(op, {{"dout", dout}});
  f32(op, {{"dtable", dtable}});  // a parameter gradient: float32 under mixed precision too
  i32(op, {"ids", ids});
  rank(op, {"dtable", dtable}, 2);
  const int64_t n = ids.numel(), d = dtable.dim(1);
  shape(op, {"dout", dout}, {n, d});
  SY_WITH_T(dt, cuda::embedding_backward(ptr<T>(dout), ids.data<int32_t>(), dtable.data<float>(), n, d, stream_));
}

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  const DType dt = floats(op, {{"x", x}, {"w", w}, {"y", y}});
  f32(op, {{"rstd", rstd}});
  rank(op, {"x", x}, 2);
  const int64_t n = x.dim(0), d = x.dim(1);
  shape(op, {"w", w}, {d});
  shape(op, {"y", y}, {n, d});
  shape(op, {"rstd", rstd}, {n});
  SY_WITH_T(dt, cuda::rmsnorm_forward(ptr<T>(x), ptr<T>(w), float(eps), ptr<T>(y), rstd.data<float>(), n, d, stream_));
}

void CudaBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                   const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  const DType dt = floats(op, {{"dy", dy}, {"x", x}, {"w", w}, {"dx", dx}});
  f32(op, {{"rstd", rstd}, {"dw", dw}});
  rank(op, {"x", x}, 2);
  const int64_t n = x.dim(0), d = x.dim(1);
  shape(op, {"dy", dy}, {n, d});
  shape(op, {"dx", dx}, {n, d});
  shape(op, {"w", w}, {d});
  shape(op, {"dw", dw}, {d});
  shape(op, {"rstd", rstd}, {n});
  float* part = scratch_f32(rmsnorm_backward_scratch(n, d));
  SY_WITH_T(dt, cuda::rmsnorm_backward(ptr<T>(dy), ptr<T>(x), ptr<T>(w), rstd.data<float>(), ptr<T>(dx),
                                       dw.data<float>(), part, n, d, stream_));
}

namespace {
void check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                const Tensor& y) {
  floats(op, {{"x", x}, {"y", y}});
  f32(op, {{"cos", cos}, {"sin", sin}});
  i32(op, {"positions", positions});
  rank(op, {"x", x}, 3);
  const int64_t n = x.dim(0), hd = x.dim(2);
  if (hd % 2) fail(op, "odd head dim: " + args::describe({{"x", x}}));
  shape(op, {"y", y}, x.shape());
  shape(op, {"positions", positions}, {n});
  rank(op, {"cos", cos}, 2);
  shape(op, {"cos", cos}, {cos.dim(0), hd / 2});
  shape(op, {"sin", sin}, cos.shape());
}
}  // namespace

void CudaBackend::rope_forward(const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                               const Tensor& y) {
  check_rope("rope_forward", x, positions, cos, sin, y);
  SY_WITH_T(x.dtype(), cuda::rope_forward(ptr<T>(x), positions.data<int32_t>(), cos.data<float>(), sin.data<float>(),
                                          ptr<T>(y), x.dim(0), x.dim(1), x.dim(2), stream_));
}

void CudaBackend::rope_backward(const Tensor& dy, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                                const Tensor& dx) {
  check_rope("rope_backward", dy, positions, cos, sin, dx);
  if (dy.raw() == dx.raw()) fail("rope_backward", "dx must not alias dy (it accumulates)");
  SY_WITH_T(dy.dtype(), cuda::rope_backward(ptr<T>(dy), positions.data<int32_t>(), cos.data<float>(),
                                            sin.data<float>(), ptr<T>(dx), dy.dim(0), dy.dim(1), dy.dim(2), stream_));
}

namespace {
// The shape and options of one attention call, checked as the CPU backend checks them.
AttentionDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse, const Backend::AttentionOpts& opts) {
  const DType dt = floats(op, {{"q", q}, {"k", k}, {"v", v}, {"out", out}});
  f32(op, {{"lse", lse}});
  if (opts.sinks.defined()) args::check(op, {"sinks", opts.sinks}, dt);
  rank(op, {"q", q}, 4);
  rank(op, {"k", k}, 4);
  rank(op, {"v", v}, 4);
  AttentionDims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), v.dim(3), opts.scale, opts.window};
  if (d.kv == 0 || d.h % d.kv != 0)
    fail(op, "query heads must be a multiple of kv heads: " + args::describe({{"q", q}, {"k", k}}));
  if (opts.window < 0) fail(op, "window must be >= 0 (0: no sliding window), got " + std::to_string(opts.window));
  if (!(opts.scale >= 0) || std::isinf(opts.scale)) fail(op, "scale must be finite and >= 0 (0: 1/sqrt(head_dim))");
  if (d.scale == 0) d.scale = 1.0 / std::sqrt(double(d.hd));
  shape(op, {"k", k}, {d.b, d.t, d.kv, d.hd});
  shape(op, {"v", v}, {d.b, d.t, d.kv, d.hv});
  shape(op, {"out", out}, {d.b, d.t, d.h, d.hv});
  shape(op, {"lse", lse}, {d.b, d.h, d.t});
  if (opts.sinks.defined()) shape(op, {"sinks", opts.sinks}, {d.h});
  return d;
}

SdpaDesc sdpa_desc(const AttentionDims& d, bool sinks) {
  return SdpaDesc{d.b, d.t, d.h, d.kv, d.hd, d.hv, float(d.scale), DnnType::BF16, true, d.window, sinks};
}

// Carves the backend's scratch into pieces, each 256-byte aligned (cuDNN wants 16).
struct Carve {
  char* base;
  size_t used = 0;
  template <class T> T* take(int64_t n) {
    T* p = reinterpret_cast<T*>(base + used);
    used += (size_t(n) * sizeof(T) + 255) / 256 * 256;
    return p;
  }
};
size_t carve_bytes(std::initializer_list<size_t> bytes) {
  size_t total = 0;
  for (size_t b : bytes) total += (b + 255) / 256 * 256;
  return total;
}
}  // namespace

// bf16 through cuDNN wherever it builds the plans (the key includes every option, so a shape or
// option cuDNN refuses falls back to the simple kernels); float32 always on the simple kernels.
bool CudaBackend::fused_attention(DType dt, const AttentionDims& d, bool sinks) {
  return dt == DType::BF16 && Dnn::available() && dnn_.sdpa_supported(sdpa_desc(d, sinks));
}

void CudaBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const AttentionOpts& opts) {
  const AttentionDims d = check_attention("attention_forward", q, k, v, out, lse, opts);
  if (d.b == 0 || d.t == 0 || d.h == 0) return;
  const bool sk = opts.sinks.defined();
  if (fused_attention(q.dtype(), d, sk)) {
    // cuDNN reads the sinks as fp32 [h]; ours are bf16, as q.
    float* sinks32 = sk ? scratch_f32(size_t(d.h)) : nullptr;
    if (sk) cuda::convert(ptr<__nv_bfloat16>(opts.sinks), sinks32, d.h, stream_);
    return dnn_.sdpa_forward(sdpa_desc(d, sk), q.raw(), k.raw(), v.raw(), sinks32, out.raw(), lse.data<float>(),
                             stream_);
  }
  SY_WITH_T(q.dtype(), cuda::attention_forward(ptr<T>(q), ptr<T>(k), ptr<T>(v), sk ? ptr<T>(opts.sinks) : nullptr,
                                               ptr<T>(out), lse.data<float>(), d, stream_));
}

void CudaBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                     const Tensor& dv, const AttentionOpts& opts, const Tensor& dsinks) {
  const char* op = "attention_backward";
  const AttentionDims d = check_attention(op, q, k, v, out, lse, opts);
  floats(op, {{"q", q}, {"dout", dout}, {"dq", dq}, {"dk", dk}, {"dv", dv}});
  const bool sk = opts.sinks.defined();
  if (sk != dsinks.defined())
    fail(op, "dsinks must be given exactly when sinks are: " +
                 args::describe({{"sinks", opts.sinks}, {"dsinks", dsinks}}));
  // The sinks' gradient is float32 in both precisions: a parameter's (master) gradient, as the
  // model's ParamStore holds it under bf16 mixed precision.
  if (sk) f32(op, {{"dsinks", dsinks}});
  shape(op, {"dout", dout}, out.shape());
  shape(op, {"dq", dq}, q.shape());
  shape(op, {"dk", dk}, k.shape());
  shape(op, {"dv", dv}, v.shape());
  if (sk) shape(op, {"dsinks", dsinks}, {d.h});
  if (d.b == 0 || d.t == 0 || d.h == 0) return;
  if (fused_attention(q.dtype(), d, sk)) {
    // cuDNN overwrites its gradients and the Backend contract adds: through scratch, then axpy.
    // The sinks' gradient comes back fp32 and is added to the float32 dsinks.
    using B16 = __nv_bfloat16;
    const int64_t nq = q.numel(), nk = k.numel(), nv = v.numel(), h = d.h;
    Carve c{reinterpret_cast<char*>(scratch_f32(
        carve_bytes({size_t(nq) * 2, size_t(nk) * 2, size_t(nv) * 2, size_t(h) * 4, size_t(h) * 4}) /
        4))};
    B16 *gq = c.take<B16>(nq), *gk = c.take<B16>(nk), *gv = c.take<B16>(nv);
    float *sinks32 = c.take<float>(h), *dsink32 = c.take<float>(h);
    if (sk) cuda::convert(ptr<B16>(opts.sinks), sinks32, h, stream_);
    dnn_.sdpa_backward(sdpa_desc(d, sk), dout.raw(), q.raw(), k.raw(), v.raw(), out.raw(), lse.data<float>(),
                       sk ? sinks32 : nullptr, gq, gk, gv, sk ? dsink32 : nullptr, stream_);
    cuda::axpy(1.0f, gq, ptr<B16>(dq), nq, stream_);
    cuda::axpy(1.0f, gk, ptr<B16>(dk), nk, stream_);
    cuda::axpy(1.0f, gv, ptr<B16>(dv), nv, stream_);
    if (sk) cuda::axpy(1.0f, dsink32, dsinks.data<float>(), h, stream_);
    return;
  }
  SY_WITH_T(q.dtype(), cuda::attention_backward(ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(out),
                                                lse.data<float>(), sk ? ptr<T>(opts.sinks) : nullptr, ptr<T>(dq),
                                                ptr<T>(dk), ptr<T>(dv), sk ? dsinks.data<float>() : nullptr, d, stream_));
}

void CudaBackend::copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col, int64_t width,
                               bool accumulate) {
  const char* op = "copy_columns";
  const DType dt = floats(op, {{"src", src}, {"dst", dst}});
  rank(op, {"src", src}, 2);
  rank(op, {"dst", dst}, 2);
  shape(op, {"dst", dst}, {src.dim(0), dst.dim(1)});
  // Each bound on its own, so that no sum of the caller's integers can overflow.
  if (width < 0 || src_col < 0 || dst_col < 0 || src_col > src.dim(1) - width || dst_col > dst.dim(1) - width)
    fail(op, "columns [" + std::to_string(src_col) + ", +" + std::to_string(width) + ") -> [" +
                 std::to_string(dst_col) + ", +" + std::to_string(width) + ") out of range: " +
                 args::describe({{"src", src}, {"dst", dst}}));
  if (src.dim(0) == 0 || width == 0) return;
  SY_WITH_T(dt, cuda::copy_columns(ptr<T>(src) + src_col, src.dim(1), ptr<T>(dst) + dst_col, dst.dim(1), src.dim(0),
                                   width, accumulate, stream_));
}

void CudaBackend::swiglu_forward(const Tensor& h, const Tensor& out, const GluOpts& glu) {
  const char* op = "swiglu_forward";
  const DType dt = floats(op, {{"h", h}, {"out", out}});
  rank(op, {"h", h}, 2);
  if (h.dim(1) % 2) fail(op, "odd gate|up width: " + args::describe({{"h", h}}));
  const int64_t n = h.dim(0), f = h.dim(1) / 2;
  shape(op, {"out", out}, {n, f});
  const GluParams p = glu_params(op, glu);
  SY_WITH_T(dt, cuda::swiglu_forward(ptr<T>(h), ptr<T>(out), n, f, stream_, p));
}

void CudaBackend::swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh, const GluOpts& glu) {
  const char* op = "swiglu_backward";
  const DType dt = floats(op, {{"dout", dout}, {"h", h}, {"dh", dh}});
  rank(op, {"h", h}, 2);
  if (h.dim(1) % 2) fail(op, "odd gate|up width: " + args::describe({{"h", h}}));
  const int64_t n = h.dim(0), f = h.dim(1) / 2;
  shape(op, {"dout", dout}, {n, f});
  shape(op, {"dh", dh}, {n, 2 * f});
  const GluParams p = glu_params(op, glu);
  SY_WITH_T(dt, cuda::swiglu_backward(ptr<T>(dout), ptr<T>(h), ptr<T>(dh), n, f, stream_, p));
}

void CudaBackend::router_forward(const Tensor& logits, const Tensor& bias, ScoreFn fn, int k, bool norm_topk,
                                 const Tensor& scores, const Tensor& idx, const Tensor& w, RouterGroups grp) {
  const char* op = "router_forward";
  f32(op, {{"logits", logits}, {"scores", scores}, {"w", w}});
  if (bias.defined()) f32(op, {{"bias", bias}});
  i32(op, {"idx", idx});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1);
  if (k < 1 || k > e) fail(op, "k = " + std::to_string(k) + " outside [1, E] for " + args::describe({{"logits", logits}}));
  const int64_t g = grp.groups, per = g > 0 ? e / g : 0;
  if (g < 1 || g > 64 || e % g != 0 || grp.top_groups < 1 || grp.top_groups > g || grp.top_groups * per < k)
    fail(op, std::to_string(g) + " groups (at most 64), top " + std::to_string(grp.top_groups) +
                 " of them, cannot hold k = " + std::to_string(k) + " of E = " + std::to_string(e) + " experts");
  if (bias.defined()) shape(op, {"bias", bias}, {e});
  shape(op, {"scores", scores}, {n, e});
  shape(op, {"idx", idx}, {n, k});
  shape(op, {"w", w}, {n, k});
  cuda::router_forward(logits.data<float>(), bias.defined() ? bias.data<float>() : nullptr, fn == ScoreFn::Sigmoid, k,
                       norm_topk, scores.data<float>(), idx.data<int32_t>(), w.data<float>(), n, e, stream_,
                       grp.groups, grp.top_groups);
}

void CudaBackend::router_backward(const Tensor& dw, const Tensor& aux_coef, const Tensor& logits, const Tensor& scores,
                                  const Tensor& idx, ScoreFn fn, bool norm_topk, const Tensor& dlogits) {
  const char* op = "router_backward";
  f32(op, {{"dw", dw}, {"logits", logits}, {"scores", scores}, {"dlogits", dlogits}});
  if (aux_coef.defined()) f32(op, {{"aux_coef", aux_coef}});
  i32(op, {"idx", idx});
  rank(op, {"logits", logits}, 2);
  rank(op, {"idx", idx}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1), k = idx.dim(1);
  shape(op, {"scores", scores}, {n, e});
  shape(op, {"dlogits", dlogits}, {n, e});
  shape(op, {"idx", idx}, {n, k});
  shape(op, {"dw", dw}, {n, k});
  if (aux_coef.defined()) shape(op, {"aux_coef", aux_coef}, {e});
  cuda::router_backward(dw.data<float>(), aux_coef.defined() ? aux_coef.data<float>() : nullptr, scores.data<float>(),
                        idx.data<int32_t>(), fn == ScoreFn::Sigmoid, norm_topk, dlogits.data<float>(), n, e, int(k),
                        stream_);
}

double CudaBackend::zloss_forward(const Tensor& logits) {
  const char* op = "zloss_forward";
  f32(op, {{"logits", logits}});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1);
  if (e == 0) fail(op, "no experts: " + args::describe({{"logits", logits}}));
  float* rows = scratch_f32(size_t(n));
  cuda::zloss_forward(logits.data<float>(), rows, n, e, stream_);
  return host_sum(rows, n);
}

void CudaBackend::zloss_backward(const Tensor& logits, double coef, const Tensor& dlogits) {
  const char* op = "zloss_backward";
  f32(op, {{"logits", logits}, {"dlogits", dlogits}});
  rank(op, {"logits", logits}, 2);
  shape(op, {"dlogits", dlogits}, logits.shape());
  cuda::zloss_backward(logits.data<float>(), float(coef), dlogits.data<float>(), logits.dim(0), logits.dim(1), stream_);
}

void CudaBackend::gather_rows(const Tensor& x, const Tensor& src_rows, const Tensor& out) {
  const char* op = "gather_rows";
  const DType dt = floats(op, {{"x", x}, {"out", out}});
  i32(op, {"src_rows", src_rows});
  rank(op, {"x", x}, 2);
  rank(op, {"src_rows", src_rows}, 1);
  const int64_t d = x.dim(1), m = src_rows.dim(0);
  shape(op, {"out", out}, {m, d});
  SY_WITH_T(dt, cuda::gather_rows(ptr<T>(x), src_rows.data<int32_t>(), ptr<T>(out), m, d, stream_));
}

void CudaBackend::gather_rows_backward(const Tensor& dxp, const Tensor& slot_rows, const Tensor& dx) {
  const char* op = "gather_rows_backward";
  const DType dt = floats(op, {{"dxp", dxp}, {"dx", dx}});
  i32(op, {"slot_rows", slot_rows});
  rank(op, {"dxp", dxp}, 2);
  rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t d = dxp.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  shape(op, {"dx", dx}, {n, d});
  SY_WITH_T(dt, cuda::gather_rows_backward(ptr<T>(dxp), slot_rows.data<int32_t>(), ptr<T>(dx), n, int(k), d, stream_));
}

void CudaBackend::combine_forward(const Tensor& y, const Tensor& slot_rows, const Tensor& w, const Tensor& out) {
  const char* op = "combine_forward";
  const DType dt = floats(op, {{"y", y}, {"out", out}});
  f32(op, {{"w", w}});  // router weights stay float32
  i32(op, {"slot_rows", slot_rows});
  rank(op, {"y", y}, 2);
  rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t d = y.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  shape(op, {"w", w}, {n, k});
  shape(op, {"out", out}, {n, d});
  SY_WITH_T(dt, cuda::combine_forward(ptr<T>(y), slot_rows.data<int32_t>(), w.data<float>(), ptr<T>(out), n, int(k), d,
                                      stream_));
}

void CudaBackend::combine_backward(const Tensor& dout, const Tensor& y, const Tensor& slot_rows, const Tensor& w,
                                   const Tensor& dy, const Tensor& dw) {
  const char* op = "combine_backward";
  const DType dt = floats(op, {{"dout", dout}, {"y", y}, {"dy", dy}});
  f32(op, {{"w", w}, {"dw", dw}});
  i32(op, {"slot_rows", slot_rows});
  rank(op, {"y", y}, 2);
  rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t m = y.dim(0), d = y.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  shape(op, {"dout", dout}, {n, d});
  shape(op, {"w", w}, {n, k});
  shape(op, {"dw", dw}, {n, k});
  shape(op, {"dy", dy}, {m, d});
  SY_WITH_T(dt, cuda::combine_backward(ptr<T>(dout), ptr<T>(y), slot_rows.data<int32_t>(), w.data<float>(), ptr<T>(dy),
                                       dw.data<float>(), n, int(k), d, stream_));
}

double CudaBackend::cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& lse) {
  const char* op = "cross_entropy_forward";
  const DType dt = floats(op, {{"logits", logits}});
  f32(op, {{"lse", lse}});
  i32(op, {"targets", targets});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  if (v == 0) fail(op, "empty vocabulary: " + args::describe({{"logits", logits}}));
  shape(op, {"targets", targets}, {n});
  shape(op, {"lse", lse}, {n});
  float* rows = scratch_f32(size_t(n));
  SY_WITH_T(dt, cuda::cross_entropy_forward(ptr<T>(logits), targets.data<int32_t>(), lse.data<float>(), rows, n, v, stream_));
  return host_sum(rows, n);
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double scale,
                                         const Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  const DType dt = floats(op, {{"logits", logits}, {"dlogits", dlogits}});
  f32(op, {{"lse", lse}});
  i32(op, {"targets", targets});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  shape(op, {"targets", targets}, {n});
  shape(op, {"lse", lse}, {n});
  shape(op, {"dlogits", dlogits}, logits.shape());
  SY_WITH_T(dt, cuda::cross_entropy_backward(ptr<T>(logits), targets.data<int32_t>(), lse.data<float>(), float(scale),
                                             ptr<T>(dlogits), n, v, stream_));
}

void CudaBackend::logits_row_max(const Tensor& logits, const Tensor& row_max) {
  const char* op = "logits_row_max";
  const DType dt = floats(op, {{"logits", logits}});  // float32 or bfloat16 logits, float32 row maxima
  f32(op, {{"row_max", row_max}});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  if (v == 0) fail(op, "empty vocabulary shard: " + args::describe({{"logits", logits}}));
  shape(op, {"row_max", row_max}, {n});
  SY_WITH_T(dt, cuda::logits_row_max(ptr<T>(logits), row_max.data<float>(), n, v, stream_));
}

void CudaBackend::cross_entropy_shard_sums(const Tensor& logits, const Tensor& targets, const Tensor& global_max,
                                           const Tensor& sum_exp, const Tensor& target_logit) {
  const char* op = "cross_entropy_shard_sums";
  const DType dt = floats(op, {{"logits", logits}});
  f32(op, {{"global_max", global_max}, {"sum_exp", sum_exp}, {"target_logit", target_logit}});
  i32(op, {"targets", targets});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  for (const Tensor* t : {&targets, &global_max, &sum_exp, &target_logit}) shape(op, {"rows", *t}, {n});
  SY_WITH_T(dt, cuda::cross_entropy_shard_sums(ptr<T>(logits), targets.data<int32_t>(), global_max.data<float>(),
                                               sum_exp.data<float>(), target_logit.data<float>(), n, v, stream_));
}

void CudaBackend::adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                               const AdamWArgs& a) {
  const char* op = "adamw_update";
  f32(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}});
  const int64_t n = param.numel();
  if (grad.numel() != n || m.numel() != n || v.numel() != n)
    fail(op, "numel differs: " + args::describe({{"param", param}, {"grad", grad}, {"m", m}, {"v", v}}));
  if (a.step < 1) fail(op, "step must count from 1, got " + std::to_string(a.step));
  cuda::adamw_update(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(), nullptr, n,
                     AdamWParams::make(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.grad_scale, a.step), stream_);
}

SY_CUDA_NS_END
}  // namespace sy::cuda
