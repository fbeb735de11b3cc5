// A Mixture-of-Experts feed-forward layer, composed of its parts:
//   router   : logits = xn Wr^T -> scores -> top-k selection (+ balancing bias) -> weights
//   dispatch : DispatchPlan (who goes where, capacity drops) + gather of token rows by expert
//   experts  : grouped SwiGLU over the per-expert row groups (or the sequential reference)
//   combine  : weighted scatter of expert outputs back to their tokens
// plus always-on shared experts, and the load-balance aux loss and router z-loss.
#pragma once

#include <memory>
#include <vector>

#include "engine/layers/dispatch_plan.h"
#include "engine/layers/expert_dispatcher.h"
#include "engine/layers/expert_tensor_parallel.h"
#include "engine/layers/swiglu_mlp.h"
#include "engine/model_config.h"
#include "engine/params.h"

namespace sy {

enum class ExpertsImpl : uint8_t { Grouped, Sequential };

// The routed experts a model instance holds: [first, first + count) of every MoE layer
// (count -1: all of them). Under expert parallelism each rank holds only its own. Under expert
// tensor parallelism it holds slice `slice` of `slices` of each: rows
// [slice F/slices, (slice+1) F/slices) of w1, w3 and w2 (engine/layers/expert_tensor_parallel.h).
struct ExpertRange {
  int64_t first = 0, count = -1;
  int slice = 0, slices = 1;
};

// What one forward pass of the layer reports.
struct MoeForwardStats {
  double aux_loss = 0;  // coefficient applied
  double z_loss = 0;    // coefficient applied
  std::vector<int64_t> routed;  // [E] assignments chosen by the router (before drops)
  int64_t dropped = 0;
  uint64_t dropped_digest = 0;  // dropped_digest(plan): which assignments were dropped
  int64_t assignments = 0;  // N * k
  // Kept assignments whose expert lives on another expert-parallel rank: the rows this rank
  // sends in the dispatch exchange (0 without expert parallelism).
  int64_t rows_sent_off_rank = 0;
  int64_t rows_received_off_rank = 0;  // rows other ranks sent to this rank's experts
};

class MoeLayer {
 public:
  // Under tensor parallelism each TP rank routes its own chunk of the micro-batch's token rows
  // (with sequence parallelism the rows it holds; without, rows [r N/t, (r+1) N/t) of the
  // replicated input, whose outputs are then all-gathered), decides drops over the whole
  // micro-batch as one rank would, and runs the shared experts tensor-parallel.
  MoeLayer(ParamStore& ps, const ModelConfig& cfg, int64_t layer, ExpertRange held = {}, TpPlace tp = {});
  // The router's balancing bias (not trained; changed by update_bias). Allocated by the model.
  void allocate_buffers(Backend& be, DType dt);

  // out += moe(xn); xn [N, D].
  MoeForwardStats forward(Backend& be, const Tensor& xn, const Tensor& out);
  // dxn += d/dxn of (out-branch . dout) + loss_scale * (aux + z); parameter gradients +=.
  void backward(Backend& be, const Tensor& dout, const Tensor& xn, const Tensor& dxn, double loss_scale);

  // Aux-loss-free balancing (DeepSeek-V3): bias[e] += rate * sign(mean load - load[e]) over the
  // loads accumulated since the last call; then the accumulator is cleared.
  void update_bias(Backend& be);
  const Tensor& bias() const { return bias_; }
  const std::vector<int64_t>& pending_load() const { return load_since_update_; }

  void set_experts_impl(ExpertsImpl impl) { impl_ = impl; }
  // Expert parallelism: this rank computes the experts it holds and exchanges token rows with the
  // other ranks of its EP group through `ex` (which must outlive the layer's use). nullptr: no
  // communication, which needs every expert held.
  void set_token_exchange(TokenExchange* ex);
  // Expert tensor parallelism: the held slices see the rows of every rank of the ETP group, gathered
  // and scattered back through `ex` (which must outlive the layer's use). Needed when the layer
  // holds slices (ExpertRange::slices > 1); nullptr otherwise.
  void set_expert_tp_exchange(TokenExchange* ex);
  int64_t first_local_expert() const { return first_local_; }
  int64_t n_local_experts() const { return n_local_; }
  // A forward pass is collective beyond the TP group (over the EP or the ETP group), whose ranks
  // may hold other micro-batches: they must all run the same number of passes.
  bool expert_parallel() const { return disp_ != nullptr || etp_ != nullptr; }
  const ExpertDispatcher* dispatcher() const { return disp_.get(); }
  std::vector<int64_t>& pending_load() { return load_since_update_; }
  const DispatchPlan& last_plan() const { return plan_; }
  // The high-water marks the expert-side buffers were sized to (they grow, never shrink): rows
  // received over EP (0 without it) and rows gathered over ETP (0 without it). The planner's
  // dispatch-buffer figures are these rows times the bytes per row (docs/planner.md).
  int64_t received_rows_peak() const { return xe_.defined() ? xe_.dim(0) : 0; }
  int64_t gathered_rows_peak() const { return xg_.defined() ? xg_.dim(0) : 0; }
  const Tensor& last_topk_idx() const { return idx_; }

 private:
  void ensure(Backend& be, int64_t n, DType dt);
  void ensure_rows(Backend& be, int64_t m, DType dt);
  void experts_forward(Backend& be);
  void experts_backward(Backend& be);
  void ep_experts_forward(Backend& be);
  void ep_experts_backward(Backend& be);
  // The held experts on rows laid out as segments (each with per-local-expert offsets), one
  // grouped SwiGLU per segment; backward accumulates dx and the weight gradients.
  using Segments = std::vector<ExpertDispatcher::Segment>;
  void grouped_forward(Backend& be, const Tensor& x, const Segments& segs, const Tensor& h13, const Tensor& a,
                       const Tensor& y);
  void grouped_backward(Backend& be, const Tensor& dy, const Tensor& x, const Segments& segs, const Tensor& h13,
                        const Tensor& a, const Tensor& dx);
  // Expert tensor parallelism (x, y [own rows, D]; dx overwritten): engine/layers/expert_tensor_parallel.h.
  void etp_forward(Backend& be, const Tensor& x, const Segments& segs, const Tensor& y);
  void etp_backward(Backend& be, const Tensor& dy, const Tensor& dx);
  bool sliced() const { return slices_ > 1; }
  // Every held expert's fused [2F, D] gate|up and [F, D] down matrices (values or gradients; under
  // expert tensor parallelism this rank's [2F/etp, D] and [F/etp, D] slices).
  std::vector<Tensor> expert_w13(bool grad) const;
  std::vector<Tensor> expert_w2(bool grad) const;
  // model.expert_bias: every held expert's [2F] gate|up and [D] down biases (empty without).
  std::vector<Tensor> expert_b13(bool grad) const;
  std::vector<Tensor> expert_b2(bool grad) const;
  // Parameter id + offset of every held expert (its w1's id + 2: w2, + 3: b13, + 4: b2).
  std::vector<Tensor> expert_params(int offset, bool grad) const;

  ParamStore& ps_;
  const ModelConfig& cfg_;
  TpPlace tp_;
  int router_;
  int router_b_ = -1;           // model.router_logit_bias (-1: none)
  std::vector<int> expert_w1_;  // per held expert: w1 id (w3 = +1, w2 = +2; with biases b13 = +3, b2 = +4)
  std::vector<std::unique_ptr<SwiGluMlp>> shared_;
  ExpertsImpl impl_ = ExpertsImpl::Grouped;

  Tensor bias_;
  std::vector<int64_t> load_since_update_;
  DispatchPlan plan_;
  std::vector<double> aux_coef_host_;
  // Per-token tensors [N, ...].
  Tensor logits_, scores_, idx_, w_, slot_rows_, dlogits_, dw_, aux_coef_;
  Tensor ones_;  // [N, 1] of ones: the router's logit bias as a GEMM
  // Per-permuted-row tensors [M, ...] (M = kept assignments; capacity N * k).
  Tensor src_rows_, xp_, h13_, a_, yp_, dyp_, dxp_;
  int64_t rows_ = 0;
  // Expert parallelism: rows received for the local experts [R, ...] (R from the count exchange).
  std::unique_ptr<ExpertDispatcher> disp_;
  int64_t first_local_ = 0, n_local_ = 0;
  Tensor xe_, h13e_, ae_, ye_, dxe_;
  // Expert tensor parallelism: this rank's slice of every held expert (F / slices_ hidden units),
  // the exchange over the ETP group and the gathered rows [S, ...] (S: the group's rows).
  int slice_ = 0, slices_ = 1;
  int64_t f_local_ = 0;
  std::unique_ptr<ExpertTpRegion> etp_;
  Segments own_segs_;
  Tensor xg_, h13g_, ag_, yg_, dxg_;
  // Tensor parallelism: every rank's top-k choices [N, k] (the whole micro-batch's plan); without
  // sp, this chunk's routed output and input gradient [N/t, D] (their all-gathers go to the
  // shared TP workspace).
  Tensor idx_all_, y_chunk_, dx_chunk_;
  uint64_t digest_ = 0;
};

}  // namespace sy
