// CudaBackend: the layer ops, each a shape check and a launch of its kernel (kernels.h).
#include "engine/cuda/backend/cuda_backend_impl.h"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

using args::f32;
using args::fail;
using args::rank;
using args::shape;

namespace {
void i32(const char* op, args::Arg a) { args::check(op, a, DType::I32); }
}  // namespace

void CudaBackend::embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out) {
  const char* op = "embedding_forward";
  f32(op, {{"table", table}, {"out", out}});
  i32(op, {"ids", ids});
  rank(op, {"table", table}, 2);
  const int64_t n = ids.numel(), d = table.dim(1);
  shape(op, {"out", out}, {n, d});
  cuda::embedding_forward(table.data<float>(), ids.data<int32_t>(), out.data<float>(), n, d, stream_);
}

void CudaBackend::embedding_backward(const Tensor& dout, const Tensor& ids, const Tensor& dtable) {
  const char* op = "embedding_backward";
  f32(op, {{"dout", dout}, {"dtable", dtable}});
  i32(op, {"ids", ids});
  rank(op, {"dtable", dtable}, 2);
  const int64_t n = ids.numel(), d = dtable.dim(1);
  shape(op, {"dout", dout}, {n, d});
  cuda::embedding_backward(dout.data<float>(), ids.data<int32_t>(), dtable.data<float>(), n, d, stream_);
}

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  f32(op, {{"x", x}, {"w", w}, {"y", y}, {"rstd", rstd}});
  rank(op, {"x", x}, 2);
  const int64_t n = x.dim(0), d = x.dim(1);
  shape(op, {"w", w}, {d});
  shape(op, {"y", y}, {n, d});
  shape(op, {"rstd", rstd}, {n});
  cuda::rmsnorm_forward(x.data<float>(), w.data<float>(), float(eps), y.data<float>(), rstd.data<float>(), n, d,
                        stream_);
}

void CudaBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                   const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  f32(op, {{"dy", dy}, {"x", x}, {"w", w}, {"rstd", rstd}, {"dx", dx}, {"dw", dw}});
  rank(op, {"x", x}, 2);
  const int64_t n = x.dim(0), d = x.dim(1);
  shape(op, {"dy", dy}, {n, d});
  shape(op, {"dx", dx}, {n, d});
  shape(op, {"w", w}, {d});
  shape(op, {"dw", dw}, {d});
  shape(op, {"rstd", rstd}, {n});
  float* part = scratch_f32(rmsnorm_backward_scratch(n, d));
  cuda::rmsnorm_backward(dy.data<float>(), x.data<float>(), w.data<float>(), rstd.data<float>(), dx.data<float>(),
                         dw.data<float>(), part, n, d, stream_);
}

namespace {
void check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                const Tensor& y) {
  f32(op, {{"x", x}, {"cos", cos}, {"sin", sin}, {"y", y}});
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
  cuda::rope_forward(x.data<float>(), positions.data<int32_t>(), cos.data<float>(), sin.data<float>(),
                     y.data<float>(), x.dim(0), x.dim(1), x.dim(2), stream_);
}

void CudaBackend::rope_backward(const Tensor& dy, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                                const Tensor& dx) {
  check_rope("rope_backward", dy, positions, cos, sin, dx);
  if (dy.raw() == dx.raw()) fail("rope_backward", "dx must not alias dy (it accumulates)");
  cuda::rope_backward(dy.data<float>(), positions.data<int32_t>(), cos.data<float>(), sin.data<float>(),
                      dx.data<float>(), dy.dim(0), dy.dim(1), dy.dim(2), stream_);
}

namespace {
struct AttnDims {
  int64_t b, t, h, kv, hd;
};
AttnDims check_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse) {
  f32(op, {{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}});
  rank(op, {"q", q}, 4);
  rank(op, {"k", k}, 4);
  const AttnDims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3)};
  if (d.kv == 0 || d.h % d.kv != 0)
    fail(op, "query heads must be a multiple of kv heads: " + args::describe({{"q", q}, {"k", k}}));
  shape(op, {"k", k}, {d.b, d.t, d.kv, d.hd});
  shape(op, {"v", v}, {d.b, d.t, d.kv, d.hd});
  shape(op, {"out", out}, q.shape());
  shape(op, {"lse", lse}, {d.b, d.h, d.t});
  return d;
}
}  // namespace

void CudaBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse) {
  const AttnDims d = check_attention("attention_forward", q, k, v, out, lse);
  cuda::attention_forward(q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(), lse.data<float>(), d.b,
                          d.t, d.h, d.kv, d.hd, stream_);
}

void CudaBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                     const Tensor& dv) {
  const char* op = "attention_backward";
  const AttnDims d = check_attention(op, q, k, v, out, lse);
  f32(op, {{"dout", dout}, {"dq", dq}, {"dk", dk}, {"dv", dv}});
  shape(op, {"dout", dout}, q.shape());
  shape(op, {"dq", dq}, q.shape());
  shape(op, {"dk", dk}, k.shape());
  shape(op, {"dv", dv}, v.shape());
  cuda::attention_backward(dout.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                           lse.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>(), d.b, d.t, d.h,
                           d.kv, d.hd, stream_);
}

void CudaBackend::swiglu_forward(const Tensor& h, const Tensor& out) {
  const char* op = "swiglu_forward";
  f32(op, {{"h", h}, {"out", out}});
  rank(op, {"h", h}, 2);
  if (h.dim(1) % 2) fail(op, "odd gate|up width: " + args::describe({{"h", h}}));
  const int64_t n = h.dim(0), f = h.dim(1) / 2;
  shape(op, {"out", out}, {n, f});
  cuda::swiglu_forward(h.data<float>(), out.data<float>(), n, f, stream_);
}

void CudaBackend::swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh) {
  const char* op = "swiglu_backward";
  f32(op, {{"dout", dout}, {"h", h}, {"dh", dh}});
  rank(op, {"h", h}, 2);
  if (h.dim(1) % 2) fail(op, "odd gate|up width: " + args::describe({{"h", h}}));
  const int64_t n = h.dim(0), f = h.dim(1) / 2;
  shape(op, {"dout", dout}, {n, f});
  shape(op, {"dh", dh}, {n, 2 * f});
  cuda::swiglu_backward(dout.data<float>(), h.data<float>(), dh.data<float>(), n, f, stream_);
}

void CudaBackend::router_forward(const Tensor& logits, const Tensor& bias, ScoreFn fn, int k, bool norm_topk,
                                 const Tensor& scores, const Tensor& idx, const Tensor& w) {
  const char* op = "router_forward";
  f32(op, {{"logits", logits}, {"scores", scores}, {"w", w}});
  if (bias.defined()) f32(op, {{"bias", bias}});
  i32(op, {"idx", idx});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), e = logits.dim(1);
  if (k < 1 || k > e) fail(op, "k = " + std::to_string(k) + " outside [1, E] for " + args::describe({{"logits", logits}}));
  if (bias.defined()) shape(op, {"bias", bias}, {e});
  shape(op, {"scores", scores}, {n, e});
  shape(op, {"idx", idx}, {n, k});
  shape(op, {"w", w}, {n, k});
  cuda::router_forward(logits.data<float>(), bias.defined() ? bias.data<float>() : nullptr, fn == ScoreFn::Sigmoid, k,
                       norm_topk, scores.data<float>(), idx.data<int32_t>(), w.data<float>(), n, e, stream_);
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
  f32(op, {{"x", x}, {"out", out}});
  i32(op, {"src_rows", src_rows});
  rank(op, {"x", x}, 2);
  rank(op, {"src_rows", src_rows}, 1);
  const int64_t d = x.dim(1), m = src_rows.dim(0);
  shape(op, {"out", out}, {m, d});
  cuda::gather_rows(x.data<float>(), src_rows.data<int32_t>(), out.data<float>(), m, d, stream_);
}

void CudaBackend::gather_rows_backward(const Tensor& dxp, const Tensor& slot_rows, const Tensor& dx) {
  const char* op = "gather_rows_backward";
  f32(op, {{"dxp", dxp}, {"dx", dx}});
  i32(op, {"slot_rows", slot_rows});
  rank(op, {"dxp", dxp}, 2);
  rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t d = dxp.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  shape(op, {"dx", dx}, {n, d});
  cuda::gather_rows_backward(dxp.data<float>(), slot_rows.data<int32_t>(), dx.data<float>(), n, int(k), d, stream_);
}

void CudaBackend::combine_forward(const Tensor& y, const Tensor& slot_rows, const Tensor& w, const Tensor& out) {
  const char* op = "combine_forward";
  f32(op, {{"y", y}, {"w", w}, {"out", out}});
  i32(op, {"slot_rows", slot_rows});
  rank(op, {"y", y}, 2);
  rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t d = y.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  shape(op, {"w", w}, {n, k});
  shape(op, {"out", out}, {n, d});
  cuda::combine_forward(y.data<float>(), slot_rows.data<int32_t>(), w.data<float>(), out.data<float>(), n, int(k), d,
                        stream_);
}

void CudaBackend::combine_backward(const Tensor& dout, const Tensor& y, const Tensor& slot_rows, const Tensor& w,
                                   const Tensor& dy, const Tensor& dw) {
  const char* op = "combine_backward";
  f32(op, {{"dout", dout}, {"y", y}, {"w", w}, {"dy", dy}, {"dw", dw}});
  i32(op, {"slot_rows", slot_rows});
  rank(op, {"y", y}, 2);
  rank(op, {"slot_rows", slot_rows}, 2);
  const int64_t m = y.dim(0), d = y.dim(1), n = slot_rows.dim(0), k = slot_rows.dim(1);
  shape(op, {"dout", dout}, {n, d});
  shape(op, {"w", w}, {n, k});
  shape(op, {"dw", dw}, {n, k});
  shape(op, {"dy", dy}, {m, d});
  cuda::combine_backward(dout.data<float>(), y.data<float>(), slot_rows.data<int32_t>(), w.data<float>(),
                         dy.data<float>(), dw.data<float>(), n, int(k), d, stream_);
}

double CudaBackend::cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& lse) {
  const char* op = "cross_entropy_forward";
  f32(op, {{"logits", logits}, {"lse", lse}});
  i32(op, {"targets", targets});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  if (v == 0) fail(op, "empty vocabulary: " + args::describe({{"logits", logits}}));
  shape(op, {"targets", targets}, {n});
  shape(op, {"lse", lse}, {n});
  float* rows = scratch_f32(size_t(n));
  cuda::cross_entropy_forward(logits.data<float>(), targets.data<int32_t>(), lse.data<float>(), rows, n, v, stream_);
  return host_sum(rows, n);
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double scale,
                                         const Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  f32(op, {{"logits", logits}, {"lse", lse}, {"dlogits", dlogits}});
  i32(op, {"targets", targets});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  shape(op, {"targets", targets}, {n});
  shape(op, {"lse", lse}, {n});
  shape(op, {"dlogits", dlogits}, logits.shape());
  cuda::cross_entropy_backward(logits.data<float>(), targets.data<int32_t>(), lse.data<float>(), float(scale),
                               dlogits.data<float>(), n, v, stream_);
}

void CudaBackend::logits_row_max(const Tensor& logits, const Tensor& row_max) {
  const char* op = "logits_row_max";
  f32(op, {{"logits", logits}, {"row_max", row_max}});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  if (v == 0) fail(op, "empty vocabulary shard: " + args::describe({{"logits", logits}}));
  shape(op, {"row_max", row_max}, {n});
  cuda::logits_row_max(logits.data<float>(), row_max.data<float>(), n, v, stream_);
}

void CudaBackend::cross_entropy_shard_sums(const Tensor& logits, const Tensor& targets, const Tensor& global_max,
                                           const Tensor& sum_exp, const Tensor& target_logit) {
  const char* op = "cross_entropy_shard_sums";
  f32(op, {{"logits", logits}, {"global_max", global_max}, {"sum_exp", sum_exp}, {"target_logit", target_logit}});
  i32(op, {"targets", targets});
  rank(op, {"logits", logits}, 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  for (const Tensor* t : {&targets, &global_max, &sum_exp, &target_logit}) shape(op, {"rows", *t}, {n});
  cuda::cross_entropy_shard_sums(logits.data<float>(), targets.data<int32_t>(), global_max.data<float>(),
                                 sum_exp.data<float>(), target_logit.data<float>(), n, v, stream_);
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
