// Launch functions of the project's CUDA kernels: raw device pointers, explicit sizes, a stream.
// Each is the GPU twin of the CPU backend op of the same name (engine/backend.h has the
// semantics: forward ops overwrite, backward ops accumulate with +=); the kernel tests hold each
// one to that op on random inputs.
//
// Types: T is float or __nv_bfloat16 (activations and the weights' compute copy); statistics
// saved for the backward pass (rstd, lse), parameter gradients of norms, master weights and the
// optimizer's moments are float. Every launch function accepts empty sizes (it launches nothing).
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/cuda/cuda_compat.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

// ---- RMSNorm (norm_kernels.cu) -----------------------------------------------------------------
// y = x * rstd * w, rstd[n] = 1/sqrt(mean(x[n,:]^2) + eps); x, y [n, d], w [d].
template <class T>
void rmsnorm_forward(const T* x, const T* w, float eps, T* y, float* rstd, int64_t n, int64_t d, cudaStream_t s);
// dx += d/dx, dw += d/dw (float). `scratch` holds rmsnorm_backward_scratch(n, d) floats: the
// per-chunk partial sums of dw, added in a fixed order so dw is the same bits on every run.
size_t rmsnorm_backward_scratch(int64_t n, int64_t d);
template <class T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const float* rstd, T* dx, float* dw, float* scratch,
                      int64_t n, int64_t d, cudaStream_t s);

// ---- SwiGLU (pointwise_kernels.cu) ---------------------------------------------------------------
// h [n, 2f] = gate | up; out [n, f] = silu(gate) * up; dh += d/dh. With glu.limit > 0 GPT-OSS's
// clamped form (Backend::GluOpts): g = min(gate, limit), u = clamp(up, -limit, limit),
// out = g * sigmoid(alpha g) * (u + 1), no gradient where a clamp binds (it passes at the bound).
// fp32 math for either storage type.
struct GluParams {
  float alpha = 1.0f, limit = 0.0f;  // limit 0: the plain SwiGLU (alpha unused)
};
template <class T>
void swiglu_forward(const T* h, T* out, int64_t n, int64_t f, cudaStream_t s, GluParams glu = {});
template <class T>
void swiglu_backward(const T* dout, const T* h, T* dh, int64_t n, int64_t f, cudaStream_t s, GluParams glu = {});

// ---- RoPE (pointwise_kernels.cu) ------------------------------------------------------------------
// x, y [n, heads, hd] (y may alias x); pos [n]; cos, sin [P, hd/2] float tables. Backward: dx += R^T dy.
template <class T>
void rope_forward(const T* x, const int32_t* pos, const float* cos, const float* sin, T* y, int64_t n, int64_t heads,
                  int64_t hd, cudaStream_t s);
template <class T>
void rope_backward(const T* dy, const int32_t* pos, const float* cos, const float* sin, T* dx, int64_t n,
                   int64_t heads, int64_t hd, cudaStream_t s);

// ---- softmax cross-entropy (loss_kernels.cu) -------------------------------------------------------
// logits [n, v], targets [n]: lse [n] and row_loss [n] = lse - logit[target] (the caller sums the
// rows in double, in row order). Backward: dlogits += scale * (softmax - onehot).
template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, float* lse, float* row_loss, int64_t n, int64_t v,
                           cudaStream_t s);
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const float* lse, float scale, T* dlogits,
                            int64_t n, int64_t v, cudaStream_t s);
// Vocabulary-parallel pieces (a target of -1 lives in another shard: no one-hot, target logit 0);
// the row statistics are float whatever the logits' type, as the model keeps them.
template <class T> void logits_row_max(const T* logits, float* out, int64_t n, int64_t v, cudaStream_t s);
template <class T>
void cross_entropy_shard_sums(const T* logits, const int32_t* targets, const float* gmax, float* sum_exp,
                              float* target_logit, int64_t n, int64_t v, cudaStream_t s);

// ---- optimizer (optim_kernels.cu) ---------------------------------------------------------------------
// AdamW on float master weights and moments; the gradient G is float or bf16. When param_copy is
// not null it receives the updated weights in the compute type (the bf16 copy the model reads).
struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  // Computed in double on the host and rounded once: 1 - 0.9f in float is 2.4e-7 off 0.1.
  float one_minus_beta1, one_minus_beta2;
  float inv_bias1, inv_bias2;  // 1 / (1 - beta^step)
  static AdamWParams make(double lr, double beta1, double beta2, double eps, double weight_decay, double grad_scale,
                          int64_t step);
};
template <class G>
void adamw_update(float* param, const G* grad, float* m, float* v, __nv_bfloat16* param_copy, int64_t n,
                  const AdamWParams& a, cudaStream_t s);
// out[0] = sum of x^2 in double, in a fixed order (deterministic); `scratch` holds
// sum_squares_scratch() doubles.
size_t sum_squares_scratch();
template <class T> void sum_squares(const T* x, int64_t n, double* out, double* scratch, cudaStream_t s);

// ---- whole-buffer elementwise ops (memory_kernels.cu) --------------------------------------------------
template <class T> void fill(T* x, T value, int64_t n, cudaStream_t s);
template <class S, class D> void convert(const S* src, D* dst, int64_t n, cudaStream_t s);
template <class T> void axpy(float alpha, const T* x, T* y, int64_t n, cudaStream_t s);  // y += alpha x
template <class T> void scale(T* x, float alpha, int64_t n, cudaStream_t s);               // x *= alpha
// count[0] = how many elements are NaN or infinite (count must start at 0).
void count_nonfinite(const float* x, int64_t n, unsigned* count, cudaStream_t s);
// Column blocks of row-major matrices: dst[r * ld_dst + c] = (or +=) src[r * ld_src + c] for
// r < rows, c < width (the pointers already at the first column; Backend::copy_columns).
template <class T>
void copy_columns(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows, int64_t width, bool accumulate,
                  cudaStream_t s);

// ---- embedding (moe_kernels.cu) -----------------------------------------------------------------------
// out[i, :] = table[ids[i], :]; backward dtable[ids[i], :] += dout[i, :], each column summed over
// tokens in token order by one thread (repeated ids need no atomics, and the sum is deterministic).
template <class T> void embedding_forward(const T* table, const int32_t* ids, T* out, int64_t n, int64_t d, cudaStream_t s);
template <class T>
void embedding_backward(const T* dout, const int32_t* ids, float* dtable, int64_t n, int64_t d, cudaStream_t s);

// ---- MoE router (router_kernels.cu); the router runs in float whatever the model's type --------------
// The semantics of Backend::router_forward / router_backward / zloss_*; bias and aux_coef may be null.
// groups > 1 (at most 64): group-limited selection (Backend's RouterGroups).
void router_forward(const float* logits, const float* bias, bool sigmoid, int k, bool norm_topk, float* scores,
                    int32_t* idx, float* w, int64_t n, int64_t e, cudaStream_t s, int groups = 1, int top_groups = 1);
void router_backward(const float* dw, const float* aux_coef, const float* scores, const int32_t* idx, bool sigmoid,
                     bool norm_topk, float* dlogits, int64_t n, int64_t e, int k, cudaStream_t s);
// row_z2[n] = logsumexp(logits[n, :])^2 (the caller sums the rows in double); backward adds coef * d/dlogits.
void zloss_forward(const float* logits, float* row_z2, int64_t n, int64_t e, cudaStream_t s);
void zloss_backward(const float* logits, float coef, float* dlogits, int64_t n, int64_t e, cudaStream_t s);

// ---- MoE token permutation with capacity (moe_kernels.cu) ---------------------------------------------
// out[m, :] = x[src_rows[m], :]                                       (permute into expert order)
// dx[i, :] += sum_j dxp[slots[i, j], :] over slots >= 0                 (its adjoint; -1 = dropped)
// out[i, :] += sum_j w[i, j] * y[slots[i, j], :]                        (unpermute and combine)
// dy[slots[i, j], :] += w[i, j] dout[i, :]; dw[i, j] += <dout[i, :], y[slots[i, j], :]>
// Every kept slot names a distinct permuted row (as every dispatch plan does).
template <class T> void gather_rows(const T* x, const int32_t* src_rows, T* out, int64_t m, int64_t d, cudaStream_t s);
template <class T>
void gather_rows_backward(const T* dxp, const int32_t* slots, T* dx, int64_t n, int k, int64_t d, cudaStream_t s);
template <class T>
void combine_forward(const T* y, const int32_t* slots, const float* w, T* out, int64_t n, int k, int64_t d,
                     cudaStream_t s);
template <class T>
void combine_backward(const T* dout, const T* y, const int32_t* slots, const float* w, T* dy, float* dw, int64_t n,
                      int k, int64_t d, cudaStream_t s);

// ---- MoE expert biases (moe_kernels.cu; GPT-OSS's expert_bias) -----------------------------------
// Expert g owns rows [offsets[g], offsets[g + 1]) of x [*, w]; `offsets` (E + 1) and the pointer
// arrays (E device pointers, one vector [w] per expert) are host arrays.
// expert_bias_rows: every row of expert g = bias[g] (accumulate: += bias[g]).
// expert_bias_grad: db[g] (float) += the column sums of expert g's rows, summed in float in a
// fixed order (deterministic, no atomics); an empty expert's db is not touched.
template <class T>
void expert_bias_rows(T* x, const T* const* bias, const int64_t* offsets, int64_t e, int64_t w, bool accumulate,
                      cudaStream_t s);
template <class T>
void expert_bias_grad(const T* x, float* const* db, const int64_t* offsets, int64_t e, int64_t w, cudaStream_t s);

// ---- causal GQA attention, the simple fallback kernels (attention_kernels.cu) --------------------------
// Backend::attention_forward / attention_backward's semantics: q [b, t, h, hd], k [b, t, kv, hd],
// v [b, t, kv, hv], out [b, t, h, hv], lse [b, h, t] float (sink included); query t sees keys
// s <= t, and with window W > 0 only t - W < s <= t. sinks [h] (or null): a logit per query head
// added to each softmax row's denominator; the backward then adds its gradient to dsinks [h]
// (float, as every parameter gradient under mixed precision).
// A block per query row (forward, dq), key row (dk, dv) or head (dsinks): no atomics,
// deterministic. The scores of one row live in shared memory: a row sees at most
// attention_max_keys(hd, hv) keys, min(t, W) under a window (cuDNN's fused attention is the fast path).
struct AttentionDims {
  int64_t b, t, h, kv, hd, hv;
  double scale = 0;    // 0: 1/sqrt(hd)
  int64_t window = 0;  // 0: every earlier key
};
int64_t attention_max_keys(int64_t hd, int64_t hv);
template <class T>
void attention_forward(const T* q, const T* k, const T* v, const T* sinks, T* out, float* lse, const AttentionDims& d,
                       cudaStream_t s);
template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const float* lse,
                        const T* sinks, T* dq, T* dk, T* dv, float* dsinks, const AttentionDims& d, cudaStream_t s);

SY_CUDA_NS_END
}  // namespace sy::cuda
