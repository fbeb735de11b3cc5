#include "planner/memory_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <set>

#include "parallel/pipeline_schedule.h"
#include "trainer/pipeline_training.h"

namespace sy {

namespace {

constexpr int64_t kAccum = 4;  // float32: norms' rstd, attention's lse, the router, RoPE tables
constexpr int64_t kIndex = 4;  // int32 token ids and row indices

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

PipePlace stage_place(const ModelConfig& m, const PlanLayout& l, int stage) {
  return l.pp > 1 ? pipeline_place(m.n_layers, l.pp, l.vpp, stage, l.pp_layers) : PipePlace{{{0, m.n_layers}}, true, true};
}

SegmentCounts count_params(const ModelConfig& m, const PlanLayout& l, const PipePlace& place) {
  SegmentCounts c;
  const int64_t d = m.d_model, hd = m.resolved_head_dim(), t = l.tp;
  const int64_t heads = m.n_heads / t, kv = m.n_kv_heads / t;
  for (const auto& [b, e] : place.chunks)
    for (int64_t layer = b; layer < e; ++layer) {
      c.n[0] += 2 * d;  // attention and FFN norms
      if (m.mla()) {  // the latents' down-projections and norms whole; the per-head matrices by TP
        const int64_t qr = m.q_lora_rank, h = heads, qk = m.qk_head_dim();
        c.n[0] += (qr > 0 ? qr * d + qr : 0) + (m.kv_lora_rank + m.qk_rope_head_dim) * d + m.kv_lora_rank;
        c.n[1] += (qr > 0 ? h * qk * qr : h * qk * d) + h * (m.qk_nope_head_dim + m.v_head_dim) * m.kv_lora_rank +
                  h * m.v_head_dim * d;
      } else {
        if (m.qk_norm == "head") c.n[0] += 2 * hd;
        if (m.qk_norm == "full") c.n[0] += (heads + kv) * hd;
        c.n[1] += (2 * heads + 2 * kv) * hd * d;  // wq, wk, wv, wo
        if (m.attention_bias) c.n[1] += (heads + 2 * kv) * hd, c.n[0] += d;  // bq, bk, bv by heads; bo
        if (m.attention_sinks) c.n[1] += heads;
      }
      if (m.layer_is_moe(layer)) {
        c.n[0] += m.n_experts * d;  // router
        if (m.router_logit_bias) c.n[0] += m.n_experts;
        c.n[1] += m.n_shared_experts * 3 * (m.expert_ffn_dim / t) * d;
        c.n[2] += (m.n_experts / l.ep) * 3 * (m.expert_ffn_dim / l.etp) * d;
        if (m.expert_bias) c.n[2] += (m.n_experts / l.ep) * (2 * m.expert_ffn_dim + d);
      } else {
        c.n[1] += 3 * (m.d_ff / t) * d;
      }
    }
  const int64_t table = (m.vocab_size / t) * d;
  if (place.first || (place.last && m.tie_embeddings)) c.n[1] += table;
  if (place.last) {
    c.n[0] += d;                              // final norm
    if (!m.tie_embeddings) c.n[1] += table;   // LM head
  }
  return c;
}

// Multi-head Latent Attention's buffers (engine/layers/mla_block.cpp; h heads of this TP rank,
// n token rows, nl of them on its residual stream): kept for the backward pass the normed input
// and its rstd, the latents (every row) before and after their norms, q, k, v, the output and
// lse; as scratch the kv projections, the rotary tails and every gradient.
void mla_block_bytes(const ModelConfig& m, int64_t h, int64_t n, int64_t nl, int64_t a, int64_t& act, int64_t& ws) {
  const int64_t d = m.d_model, qk = m.qk_head_dim(), vd = m.v_head_dim, qr = m.q_lora_rank;
  const int64_t kvr = m.kv_lora_rank, dr = m.qk_rope_head_dim, kvb = h * (m.qk_nope_head_dim + vd);
  act += nl * d * a + nl * kAccum + (qr > 0 ? 2 * n * qr * a + n * kAccum : 0) + 2 * n * kvr * a + n * kAccum +
         2 * n * h * qk * a + 2 * n * h * vd * a + n * h * kAccum;
  ws += 2 * (n * (kvr + dr) + n * kvb) * a + 2 * n * h * dr * a + 2 * n * h * (qk + vd) * a + 2 * n * kvr * a +
        (qr > 0 ? 2 * n * qr * a : 0) + nl * d * a;
}

}  // namespace

SegmentCounts held_params(const ModelConfig& m, const PlanLayout& l, int stage) {
  return count_params(m, l, stage_place(m, l, stage));
}

int64_t StageMemory::total() const {
  int64_t s = 0;
  for (int64_t b : bytes) s += b;
  return s;
}

int64_t pipeline_buffer_count(int pp, int vpp, int micro, int rank, int eval_micro) {
  if (pp <= 1) return 0;
  // The planner asks for the same few schedules many times.
  static std::mutex mu;
  static std::map<std::array<int, 5>, int64_t> cache;
  const std::array<int, 5> key{pp, vpp, micro, rank, eval_micro};
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  int64_t created = 0, free_count = 0;
  auto take = [&] { free_count > 0 ? --free_count : ++created; };
  auto give = [&](int64_t n = 1) { free_count += n; };
  // One training step, replayed as the executor runs it.
  const PipeSchedule s = build_schedule(pp, vpp, micro);
  const auto& acts = s.ranks[size_t(rank)];
  const int n_chunks = s.chunks();
  std::set<std::pair<int, int>> posted_act, posted_grad;
  std::set<std::pair<int, int>> kept;
  const std::vector<int> done_at = send_completion_points(s, rank);
  std::multiset<int> sends;  // held sends by the action that releases them (-1: the step's end)
  auto release = [&](int at) {
    const auto n = int64_t(sends.count(at));
    sends.erase(at);
    give(n);
  };
  auto is_recv = [](PipeOp op) { return op == PipeOp::RecvActivation || op == PipeOp::RecvGrad; };
  auto post = [&](const PipeAction& a) {
    auto& slots = a.op == PipeOp::RecvGrad ? posted_grad : posted_act;
    if (slots.insert({a.micro, a.chunk}).second) take();
  };
  auto post_ahead = [&](size_t pos) {  // the next two receives in program order
    int seen = 0;
    for (size_t j = pos; j < acts.size() && seen < 2; ++j)
      if (is_recv(acts[j].op)) post(acts[j]), ++seen;
  };
  for (size_t i = 0; i < acts.size(); ++i) {
    const PipeAction& a = acts[i];
    switch (a.op) {
      case PipeOp::RecvActivation:
      case PipeOp::RecvGrad: post(a); break;
      case PipeOp::Forward:
        if (a.chunk != 0) posted_act.erase({a.micro, a.chunk}), release(int(i)), kept.insert({a.micro, a.vstage});
        post_ahead(i + 1);
        break;
      case PipeOp::Backward:
        if (a.chunk != n_chunks - 1) posted_grad.erase({a.micro, a.chunk}), release(int(i)), give();
        if (kept.erase({a.micro, a.vstage})) give();
        post_ahead(i + 1);
        break;
      case PipeOp::SendActivation:
      case PipeOp::SendGrad: take(), sends.insert(done_at[i]); break;
    }
  }
  give(int64_t(sends.size()));
  // Evaluation: per micro-batch and local chunk a received input (returned at once) and a send.
  int64_t eval_sends = 0;
  for (int m = 0; m < eval_micro; ++m)
    for (int c = 0; c < vpp; ++c) {
      const int g = c * pp + rank;
      if (g > 0) take(), give();
      if (g + 1 < n_chunks) take(), ++eval_sends;
    }
  give(eval_sends);
  std::lock_guard<std::mutex> lock(mu);
  cache[key] = created;
  return created;
}

StageMemory predict_stage_memory(const MemoryInputs& in, int stage) {
  const ModelConfig& m = in.model;
  const PlanLayout& l = in.layout;
  const int64_t a = in.prec.act, pb = in.prec.param;
  const PipePlace place = stage_place(m, l, stage);
  StageMemory out;
  using C = MemCategory;

  // Parameters, gradients, optimizer state, ZeRO's gather buffers (engine/params.cpp,
  // parallel/data_parallel.cpp, optim/optimizer.cpp): three segments, each padded to its group.
  const SegmentCounts sc = count_params(m, l, place);
  const int64_t group[3] = {l.dp, l.dp, l.edp()};
  int64_t padded = 0, shards = 0, gathers = 0, held_moments = 0;
  for (int k = 0; k < 3; ++k) {
    const int64_t p = round_up(sc.n[k], group[k]), shard = p / group[k];
    padded += p;
    shards += std::max<int64_t>(1, shard);
    if (group[k] > 1) gathers += std::max<int64_t>(1, shard);
    held_moments += l.zero >= 1 ? std::min(sc.n[k], shard) : sc.n[k];
  }
  int64_t moe_layers = 0;
  for (const auto& [b, e] : place.chunks)
    for (int64_t layer = b; layer < e; ++layer) moe_layers += m.layer_is_moe(layer);
  out[C::Parameters] = padded * pb + moe_layers * m.n_experts * kAccum + (a != pb ? padded * a : 0);
  out[C::Gradients] = padded * pb + (l.zero >= 2 ? shards * pb : 0);
  out[C::OptimizerState] = in.adamw ? 2 * held_moments * pb : 0;
  out[C::Communication] = l.zero >= 1 ? gathers * pb : 0;

  // Activations and workspace, per micro-batch (engine/model.cpp and engine/layers/*): n token
  // rows, nl of them on this rank's residual stream (1/tp under sequence parallelism).
  const int64_t t = l.tp, n = l.micro_batch * m.seq_len, nl = l.sp && t > 1 ? n / t : n;
  const int64_t d = m.d_model, hd = m.resolved_head_dim(), vl = m.vocab_size / t;
  const int64_t heads = m.n_heads / t, kv = m.n_kv_heads / t;
  out[C::Other] = m.seq_len * m.rope_dim() * kAccum + 3 * n * kIndex;  // RoPE cos/sin, positions, ids, targets
  if (m.attention_bias) out[C::Other] += n * a;                          // the ones column of the biases

  int64_t& act = out[C::Activations];
  int64_t& ws = out[C::Workspace];
  int64_t& head = out[C::HeadActivations];
  for (const auto& [b, e] : place.chunks) act += (2 * (e - b) + 1) * nl * d * a;  // residual stream
  if (place.last) {
    head += nl * d * a + nl * kAccum + n * vl * a + n * kAccum;  // final norm out + rstd, logits, lse
    if (t > 1) head += 3 * n * kAccum;                         // vocab-parallel row statistics
    ws += n * vl * a + nl * d * a;                             // dlogits, d(final norm)
  }
  if (t > 1) {
    head += 2 * n * kIndex;                            // vocab-local ids and targets
    ws += 2 * n * d * a + nl * d * a + (l.sp ? n * d * a : 0);  // TP region buffers
  }
  ws += nl * d * a;  // the residual-gradient stream

  const int64_t q_el = n * heads * hd, kv_el = n * kv * hd;
  const int64_t e = m.n_experts, k = m.top_k;
  const int64_t f = m.n_experts > 0 ? m.expert_ffn_dim / l.etp : 0;
  const int64_t n_r = t > 1 ? n / t : n, cap = n_r * k;  // token rows this rank routes; their assignments
  out.moe_layers = moe_layers;
  out.balanced_rows = cap;
  const auto recv = int64_t(std::llround(in.received_factor * double(cap)));
  const auto gathered = int64_t(std::llround(in.gathered_factor * double(l.etp * cap)));
  for (const auto& [b, end] : place.chunks)
    for (int64_t layer = b; layer < end; ++layer) {
      if (m.mla()) {
        mla_block_bytes(m, heads, n, nl, a, act, ws);
      } else {
        // Attention block: norm out + rstd, q k v o, lse; scratch for their gradients.
        act += nl * d * a + nl * kAccum + 2 * (q_el + kv_el) * a + n * heads * kAccum;
        ws += 3 * (q_el + kv_el) * a + nl * d * a;
      }
      if (m.qk_norm == "head") act += (q_el + kv_el) * a + n * (heads + kv) * kAccum, ws += (q_el + kv_el) * a;
      if (m.qk_norm == "full") act += (q_el + kv_el) * a + 2 * n * kAccum, ws += (q_el + kv_el) * a;
      // FFN block: norm out + rstd; the gradient of the norm's output.
      act += nl * d * a + nl * kAccum;
      ws += nl * d * a;
      auto swiglu = [&](int64_t width) {  // hidden gate|up and activation kept; their gradients
        act += 3 * n * width * a;
        ws += 3 * n * width * a;
      };
      if (!m.layer_is_moe(layer)) {
        swiglu(m.d_ff / t);
        continue;
      }
      for (int64_t s = 0; s < m.n_shared_experts; ++s) swiglu(m.expert_ffn_dim / t);
      // Router and dispatch (engine/layers/moe_layer.cpp): logits, scores, top-k, slots, weights,
      // permuted rows in and out, and (held experts, no ETP) their hidden states.
      act += 2 * n_r * e * kAccum + 3 * n_r * k * kIndex + cap * kIndex + 2 * cap * d * a;
      if (l.etp == 1) act += 3 * cap * f * a;
      ws += n_r * e * kAccum + n_r * k * kAccum + e * kAccum + 2 * cap * d * a;  // dlogits, dw, aux, dyp, dxp
      if (m.router_logit_bias) ws += n_r * kAccum;                              // the logit bias's ones
      if (t > 1) ws += n * k * kIndex + (l.sp ? 0 : 2 * n_r * d * a);  // gathered top-k; chunk out/in
      if (l.ep > 1) {
        const int64_t kept = 2 * recv * d * a + (l.etp == 1 ? 3 * recv * f * a : 0);  // received rows, outputs, hidden
        const int64_t scratch = recv * d * a + recv * d * a + 2 * recv * kIndex;      // dx; the dispatcher's reorder scratch
        act += kept, ws += scratch, out.dispatch += kept + scratch;
      }
      if (l.etp > 1) {
        const int64_t kept = gathered * d * a + 3 * gathered * f * a;  // gathered rows and this slice's hidden states
        const int64_t scratch = 2 * gathered * d * a + gathered * d * a;  // partial outputs, dx; the ETP copies
        act += kept, ws += scratch, out.dispatch += kept + scratch;
      }
    }
  if (l.pp > 1) {
    out.in_flight = std::min<int64_t>(l.micro_batches * l.vpp, int64_t(l.pp - stage) * l.vpp);
    out.pipeline_buffers = pipeline_buffer_count(l.pp, l.vpp, int(l.micro_batches), stage, in.eval_micro_batches);
    out.pipeline_bytes = out.pipeline_buffers * nl * d * a;
    act += out.pipeline_bytes;
  }
  return out;
}

}  // namespace sy
