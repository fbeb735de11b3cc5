#include "planner/step_time.h"

#include <algorithm>

#include "parallel/pipeline_schedule.h"
#include "planner/memory_model.h"

namespace sy {

namespace {

// Seconds to move `bytes` per GPU over a group of `size` consecutive-enough ranks spanning
// `span` ranks of the grid: over NVLink when the span fits one NVLink domain, else over the
// network (the slowest link of a ring or an all-to-all that leaves the node).
double link_seconds(double bytes, int span, const GpuSpec& g, const PlannerAssumptions& a) {
  const double bw = (span <= g.nvlink_domain ? g.nvlink_gbs : g.network_gbs) * 1e9 * a.comm_efficiency;
  return bytes / bw;
}

}  // namespace

StepTime predict_step_time(const ModelConfig& m, const PlanLayout& l, const GpuSpec& gpu,
                           const PlannerAssumptions& assume, Precision prec) {
  StepTime st;
  const double a = prec.act, pb = prec.param;
  const double seq = double(m.seq_len), n = double(l.micro_batch) * seq;  // token rows per micro-batch
  const double tokens = double(l.dp) * double(l.micro_batches) * n;       // per step
  const double model_flops = m.train_flops_per_token() * tokens;
  const double peak = gpu.bf16_tflops * 1e12;
  const int world = l.world();
  const double layers_per_stage = double(m.n_layers) / double(l.pp);
  const double moe_share = m.n_experts > 0 ? double(m.n_layers - std::min(m.first_dense_layers, m.n_layers)) / double(m.n_layers) : 0;
  // A pipeline stage other than the last recomputes each chunk's forward before its backward
  // (forward 1 of 3 units): 4/3 of the work on the stages that set the pace.
  const double recompute = l.pp > 1 ? 4.0 / 3.0 : 1.0;

  // Per micro-batch on one stage: compute and the communication inside the layers.
  const double mb_compute = model_flops / double(l.dp * l.micro_batches) / double(l.tp * l.pp) * recompute /
                            (peak * assume.compute_efficiency);
  double mb_tp = 0, mb_ep = 0;
  if (l.tp > 1) {
    // Per layer: two forward region exits (attention, FFN) and two backward entries, each an
    // all-reduce of [n, d] (with sp an all-gather plus a reduce-scatter, the same bytes): 2 (t-1)/t
    // of it per GPU; a recomputed forward repeats its two.
    const double all_reduce = 2.0 * double(l.tp - 1) / double(l.tp) * n * double(m.d_model) * a;
    mb_tp = link_seconds(layers_per_stage * (l.pp > 1 ? 6.0 : 4.0) * all_reduce, l.tp, gpu, assume);
  }
  if (l.ep > 1 || l.etp > 1) {
    // Per MoE layer: rows out and back in the forward, the same in the backward (and again in a
    // recomputed forward), each sending (ep-1)/ep of a rank's n_r * k rows of d.
    const double n_r = n / double(l.tp), rows = n_r * double(m.top_k);
    const double passes = l.pp > 1 ? 6.0 : 4.0;
    const double ep_bytes = passes * double(l.ep - 1) / double(l.ep) * rows * double(m.d_model) * a;
    const double etp_bytes = passes * double(l.etp - 1) * rows * double(m.d_model) * a;
    const double moe_layers = layers_per_stage * moe_share;
    mb_ep = moe_layers * (link_seconds(ep_bytes, l.ep * l.etp, gpu, assume) + link_seconds(etp_bytes, l.etp, gpu, assume));
  }
  const double mb_time = mb_compute + mb_tp + mb_ep;
  const double steady = double(l.micro_batches) * mb_time;
  const double bubble = pipeline_bubble_formula(l.pp, l.vpp, int(l.micro_batches));
  st.compute_s = double(l.micro_batches) * mb_compute;
  st.tp_s = double(l.micro_batches) * mb_tp;
  st.ep_s = double(l.micro_batches) * mb_ep;
  st.bubble_s = bubble < 1 ? steady * bubble / (1 - bubble) : 0;

  // Pipeline transfers: each micro-batch's activation and gradient across each chunk boundary
  // (received ahead, so only their latency-free transfer time is counted).
  if (l.pp > 1) {
    const double nl = l.sp && l.tp > 1 ? n / double(l.tp) : n;
    const double bytes = 2.0 * double(l.vpp) * double(l.micro_batches) * nl * double(m.d_model) * a;
    st.pp_s = link_seconds(bytes, 2 * l.tp * l.dp, gpu, assume);
  }
  // Gradient reduction after the backward (not overlapped): dense gradients over DP, experts
  // over EDP, a stage's share on average (the parameters the memory model counts per stage); a
  // ring moves 2 (g-1)/g of them per GPU (ZeRO's reduce-scatter + all-gather the same).
  {
    double dense = 0, expert = 0;
    for (int s = 0; s < l.pp; ++s) {
      const SegmentCounts c = held_params(m, l, s);
      dense += double(c.n[0] + c.n[1]) / double(l.pp);
      expert += double(c.n[2]) / double(l.pp);
    }
    const int edp = l.edp();
    const double dense_bytes = l.dp > 1 ? 2.0 * double(l.dp - 1) / double(l.dp) * dense * pb : 0;
    const double expert_bytes = edp > 1 ? 2.0 * double(edp - 1) / double(edp) * expert * pb : 0;
    st.dp_s = link_seconds(dense_bytes, l.tp * l.dp, gpu, assume) + link_seconds(expert_bytes, l.tp * l.dp, gpu, assume);
  }
  st.total_s = steady + st.bubble_s + st.pp_s + st.dp_s;
  st.tokens_per_s = tokens / st.total_s;
  st.mfu = model_flops / (double(world) * peak * st.total_s);
  return st;
}

}  // namespace sy
