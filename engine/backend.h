// The one op interface every backend fills. The CPU backend (engine/cpu/) is the reference
// implementation: every other backend is tested against it op by op.
//
// Conventions shared by every op:
//  * Tensors are contiguous row-major; float ops run on F32 or F64 (all float arguments of one
//    call share a dtype); index tensors are I32.
//  * Forward ops OVERWRITE their outputs.
//  * Backward ops ACCUMULATE (+=) into every gradient they produce, for activations and
//    parameters alike, so gradient accumulation and residual branches need no extra adds. The
//    caller zeroes gradients when it wants a fresh sum.
//  * `N` is the number of token rows (batch * seq), `D` the model width.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "engine/memory.h"
#include "engine/tensor.h"

namespace sy {

enum class ScoreFn : uint8_t { Softmax, Sigmoid };

// Group-limited routing (DeepSeek-V3): the E experts form `groups` equal groups; a token's
// selection is restricted to the `top_groups` groups whose two best (score + bias) values sum
// highest (ties to the lower group). groups = 1: every expert is a candidate.
struct RouterGroups {
  int groups = 1, top_groups = 1;
};

// Everything the AdamW update needs for one call; `step` counts from 1.
struct AdamWArgs {
  double lr = 0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0;
  double grad_scale = 1;  // gradients are multiplied by this first (clipping, folded into the update)
  int64_t step = 1;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The stream every op is enqueued on (a cudaStream_t for the CUDA backend), for a device
  // communicator to order its transfers after the ops that produce their buffers; null where ops
  // complete before they return (the CPU backend).
  virtual void* native_stream() const { return nullptr; }

  // ---- memory -------------------------------------------------------------------------------
  // Allocations are tallied under the category of the innermost MemScope (engine/memory.h).
  virtual Tensor empty(const Shape& shape, DType dtype) = 0;
  const MemoryCounters& memory() const { return *tally_.counters; }
  void reset_memory_peaks() { tally_.counters->reset_peaks(); }
  Tensor zeros(const Shape& shape, DType dtype) {
    Tensor t = empty(shape, dtype);
    fill(t, 0.0);
    return t;
  }
  virtual void fill(const Tensor& t, double value) = 0;
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;  // same dtype and numel
  // Host transfers; `host` points at numel() elements of the tensor's dtype.
  virtual void upload(const void* host, const Tensor& dst) = 0;
  virtual void download(const Tensor& src, void* host) = 0;
  // Converts between F32 and F64 (same numel).
  virtual void convert(const Tensor& src, const Tensor& dst) = 0;

  // ---- elementwise and reductions --------------------------------------------------------
  virtual void axpy(double alpha, const Tensor& x, const Tensor& y) = 0;  // y += alpha * x
  virtual void scale(const Tensor& x, double alpha) = 0;                  // x *= alpha
  virtual double sum_squares(const Tensor& x) = 0;                        // accumulated in double
  virtual bool all_finite(const Tensor& x) = 0;

  // ---- dense algebra ----------------------------------------------------------------------
  // C = alpha * op(A) @ op(B) + beta * C, all 2-D; op(X) = X^T when trans_x.
  virtual void gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, const Tensor& C, double alpha,
                    double beta) = 0;

  // ---- embedding ------------------------------------------------------------------------------
  // out[n, :] = table[ids[n], :]; table [V, D], ids [N] I32, out [N, D]. An id of -1 (a token
  // whose row lives in another rank's vocabulary shard) gives a zero row.
  virtual void embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out) = 0;
  // dtable[ids[n], :] += dout[n, :] (rows with id -1 are skipped)
  virtual void embedding_backward(const Tensor& dout, const Tensor& ids, const Tensor& dtable) = 0;

  // ---- RMSNorm ----------------------------------------------------------------------------
  // y = x * rstd * w with rstd[n] = 1 / sqrt(mean(x[n,:]^2) + eps); x, y [N, D], w [D], rstd [N] (saved).
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                               const Tensor& rstd) = 0;
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                const Tensor& dx, const Tensor& dw) = 0;

  // ---- rotary position embedding ----------------------------------------------------------
  // x, y [N, H, hd]; positions [N] I32; cos, sin [P, hd/2] tables (P > max position).
  // "Rotate half" pairing (as Llama/Mixtral in Hugging Face): for i < hd/2 the pair is (i, i + hd/2):
  //   y[i] = x[i] cos - x[i+hd/2] sin,  y[i+hd/2] = x[i+hd/2] cos + x[i] sin,  angle = pos * theta^(-2i/hd).
  // y may alias x (in place).
  virtual void rope_forward(const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                            const Tensor& y) = 0;
  virtual void rope_backward(const Tensor& dy, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                             const Tensor& dx) = 0;

  // ---- causal grouped-query attention ----------------------------------------------------
  // q [B, T, H, hd], k [B, T, KV, hd], v [B, T, KV, hv] with H % KV == 0 (query head h reads kv
  // head h / (H/KV)); hv may differ from hd (Multi-head Latent Attention: 192 vs 128).
  // out [B, T, H, hv], lse [B, H, T] (saved: log-sum-exp of each softmax row, sink included, for
  // the backward pass to recompute probabilities). Score scale `opts.scale` (0: 1/sqrt(hd));
  // position t attends to positions s <= t, and with a sliding window (opts.window = W > 0) only
  // to t - W < s <= t. With sinks (opts.sinks [H], a learned logit per query head, GPT-OSS) each
  // softmax row's denominator gains exp(sinks[h]): the sink takes probability mass and adds no value.
  struct AttentionOpts {
    int64_t window = 0;
    Tensor sinks;
    double scale = 0;
  };
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                 const Tensor& lse, const AttentionOpts& opts) = 0;
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse) {
    attention_forward(q, k, v, out, lse, AttentionOpts{});
  }
  // Accumulates dq, dk, dv and, with sinks, dsinks [H] (d loss / d sinks[h] = -sum over h's rows of
  // p_sink * rowsum(dout * out), p_sink = exp(sinks[h] - lse)). sinks have q's dtype, dsinks
  // accum_dtype of it (the parameter's master gradient: float32 under bf16).
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv, const AttentionOpts& opts, const Tensor& dsinks) = 0;
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& lse, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
    attention_backward(dout, q, k, v, out, lse, dq, dk, dv, AttentionOpts{}, Tensor{});
  }

  // ---- strided column blocks ----------------------------------------------------------------
  // dst[r, dst_col + c] = src[r, src_col + c] (or += with accumulate) for r < R, c < width;
  // src [R, Cs], dst [R, Cd] (2-D views of any shape). Slices and concatenations of per-head
  // features (MLA's rotary and non-rotary parts) without a transpose.
  virtual void copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col, int64_t width,
                            bool accumulate) = 0;

  // ---- SwiGLU on a fused gate|up tensor ---------------------------------------------------
  // h [N, 2F] holds gate = h[:, :F] and up = h[:, F:]; out [N, F] = silu(gate) * up. GPT-OSS's
  // clamped form (glu.limit > 0): g = min(gate, limit), u = clamp(up, -limit, limit),
  // out = g * sigmoid(alpha * g) * (u + 1); no gradient flows through a clamp that binds.
  struct GluOpts {
    double alpha = 1.0, limit = 0.0;  // limit 0: plain SwiGLU (alpha is then 1)
    bool clamped() const { return limit > 0; }
  };
  virtual void swiglu_forward(const Tensor& h, const Tensor& out, const GluOpts& glu) = 0;
  virtual void swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh, const GluOpts& glu) = 0;
  void swiglu_forward(const Tensor& h, const Tensor& out) { swiglu_forward(h, out, GluOpts{}); }
  void swiglu_backward(const Tensor& dout, const Tensor& h, const Tensor& dh) { swiglu_backward(dout, h, dh, GluOpts{}); }

  // ---- MoE: router ------------------------------------------------------------------------
  // logits [N, E] -> scores [N, E] (softmax over experts, or elementwise sigmoid);
  // selection: the k largest of (scores + bias) per row (bias [E] may be undefined), ties to the
  // lower expert index, written in descending order to idx [N, k] (I32);
  // weights w [N, k] = scores at idx (without bias), divided by their sum when norm_topk; with
  // `grp`, the candidates are the experts of each row's top groups (RouterGroups).
  virtual void router_forward(const Tensor& logits, const Tensor& bias, ScoreFn fn, int k, bool norm_topk,
                              const Tensor& scores, const Tensor& idx, const Tensor& w, RouterGroups grp = {}) = 0;
  // dlogits += d/dlogits of [ sum(dw * w) + sum_{n,e} aux_coef[e] * p[n,e] ], where
  // p[n,e] = scores[n,e] / sum_e' scores[n,e'] (the load-balance loss's probabilities; for softmax
  // p = scores). aux_coef [E] may be undefined (no aux term).
  virtual void router_backward(const Tensor& dw, const Tensor& aux_coef, const Tensor& logits,
                               const Tensor& scores, const Tensor& idx, ScoreFn fn, bool norm_topk,
                               const Tensor& dlogits) = 0;
  // Router z-loss: returns sum_n logsumexp(logits[n, :])^2 (in double); backward adds
  // coef * d/dlogits of that sum.
  virtual double zloss_forward(const Tensor& logits) = 0;
  virtual void zloss_backward(const Tensor& logits, double coef, const Tensor& dlogits) = 0;

  // ---- MoE: token dispatch (local permute; communication lives in parallel/) -------------
  // out[m, :] = x[src_rows[m], :]; x [N, D], src_rows [M] I32, out [M, D].
  virtual void gather_rows(const Tensor& x, const Tensor& src_rows, const Tensor& out) = 0;
  // Adjoint of gather through the slot table: dx[n, :] += sum_j dxp[slot_rows[n, j], :] over the
  // slots j with slot_rows[n, j] >= 0. slot_rows [N, k] I32, dxp [M, D].
  virtual void gather_rows_backward(const Tensor& dxp, const Tensor& slot_rows, const Tensor& dx) = 0;
  // out[n, :] += sum_j w[n, j] * y[slot_rows[n, j], :] over slots with slot_rows >= 0 (dropped: -1).
  virtual void combine_forward(const Tensor& y, const Tensor& slot_rows, const Tensor& w, const Tensor& out) = 0;
  // dy[slot_rows[n,j], :] += w[n,j] * dout[n, :];  dw[n, j] += <dout[n, :], y[slot_rows[n,j], :]>.
  virtual void combine_backward(const Tensor& dout, const Tensor& y, const Tensor& slot_rows, const Tensor& w,
                                const Tensor& dy, const Tensor& dw) = 0;

  // ---- MoE: grouped SwiGLU experts ----------------------------------------------------------
  // Rows [offsets[e], offsets[e+1]) of x [M, D] belong to expert e (offsets: E+1 host integers,
  // groups may be empty). For each expert: h13 = x_e @ w13[e]^T ([M_e, 2F]), a = silu(gate) * up
  // ([M_e, F]), y_e = a @ w2[e] ([M_e, D]). h13 and a are saved for the backward pass.
  // w13[e] [2F, D] (w1 rows then w3 rows), w2[e] [F, D] (stored [in, out], so that expert tensor
  // parallelism splits every expert matrix by rows).
  // With ExpertOpts: the activation's form (GluOpts) and, for GPT-OSS, biases: b13[e] [2F] added
  // to h13 before the activation and b2[e] [D] to y_e (empty spans: none). The backward pass
  // accumulates their gradients into db13, db2 (given exactly when the forward had biases).
  struct ExpertOpts {
    GluOpts glu;
    std::span<const Tensor> b13, b2;
  };
  virtual void grouped_swiglu_forward(const Tensor& x, std::span<const int64_t> offsets,
                                      std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                                      const Tensor& a, const Tensor& y, const ExpertOpts& opts) = 0;
  virtual void grouped_swiglu_backward(const Tensor& dy, const Tensor& x, std::span<const int64_t> offsets,
                                       std::span<const Tensor> w13, std::span<const Tensor> w2,
                                       const Tensor& h13, const Tensor& a, const Tensor& dx,
                                       std::span<const Tensor> dw13, std::span<const Tensor> dw2,
                                       const ExpertOpts& opts, std::span<const Tensor> db13,
                                       std::span<const Tensor> db2) = 0;
  void grouped_swiglu_forward(const Tensor& x, std::span<const int64_t> offsets, std::span<const Tensor> w13,
                              std::span<const Tensor> w2, const Tensor& h13, const Tensor& a, const Tensor& y) {
    grouped_swiglu_forward(x, offsets, w13, w2, h13, a, y, ExpertOpts{});
  }
  void grouped_swiglu_backward(const Tensor& dy, const Tensor& x, std::span<const int64_t> offsets,
                               std::span<const Tensor> w13, std::span<const Tensor> w2, const Tensor& h13,
                               const Tensor& a, const Tensor& dx, std::span<const Tensor> dw13,
                               std::span<const Tensor> dw2) {
    grouped_swiglu_backward(dy, x, offsets, w13, w2, h13, a, dx, dw13, dw2, ExpertOpts{}, {}, {});
  }

  // ---- loss ------------------------------------------------------------------------------------
  // Cross-entropy of logits [N, V] against targets [N] I32; writes lse [N] (saved) and returns the
  // SUM over rows of (lse - logit[target]) in double.
  virtual double cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& lse) = 0;
  // dlogits += scale * (softmax(logits) - onehot(target)), softmax = exp(logits - lse). A target
  // of -1 (in another vocabulary shard) has no one-hot term.
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                      double scale, const Tensor& dlogits) = 0;
  // Vocabulary-parallel cross-entropy, in two passes over a shard of the logits [N, Vs] whose
  // results are reduced over the shards between them (max, then sum):
  //   row_max[n] = max_j logits[n, j]
  //   sum_exp[n] = sum_j exp(logits[n, j] - global_max[n]);  target_logit[n] = logits[n, targets[n]]
  //   (0 where targets[n] is -1).  Then lse = global_max + log(sum over shards of sum_exp).
  virtual void logits_row_max(const Tensor& logits, const Tensor& row_max) = 0;
  virtual void cross_entropy_shard_sums(const Tensor& logits, const Tensor& targets, const Tensor& global_max,
                                        const Tensor& sum_exp, const Tensor& target_logit) = 0;

  // ---- optimizer updates on flat parameter ranges --------------------------------------------
  // With g = grad_scale * grad: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, and decoupled weight
  // decay: p -= lr * (wd * p + mhat / (sqrt(vhat) + eps)).
  virtual void adamw_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                            const AdamWArgs& args) = 0;

 protected:
  friend class MemScope;
  MemoryTally tally_;
};

// Tags the allocations made on `be` while it lives.
class MemScope {
 public:
  MemScope(Backend& be, MemCategory c) : be_(be), saved_(be.tally_.current) { be.tally_.current = c; }
  ~MemScope() { be_.tally_.current = saved_; }
  MemScope(const MemScope&) = delete;
  MemScope& operator=(const MemScope&) = delete;

 private:
  Backend& be_;
  MemCategory saved_;
};

// The CPU reference backend (always built).
std::unique_ptr<Backend> make_cpu_backend();

}  // namespace sy
