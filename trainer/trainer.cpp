#include "trainer/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/config_error.h"
#include "engine/model.h"
#include "optim/optimizer.h"
#include "parallel/data_parallel.h"
#include "parallel/pipeline_executor.h"
#include "parallel/tensor_parallel_comm.h"
#include "parallel/token_exchange_comm.h"
#include "trainer/backend_select.h"
#include "trainer/batch_source.h"
#include "trainer/buffer_comms.h"
#include "trainer/checkpoint_writer.h"
#include "trainer/evaluate.h"
#include "trainer/exit_codes.h"
#include "trainer/fault_inject.h"
#include "trainer/heartbeat.h"
#include "trainer/metrics_log.h"
#include "trainer/pipeline_training.h"
#include "trainer/run_context.h"
#include "trainer/step_guard.h"
#include "trainer/train_state.h"
#include "trainer/weights_file.h"

namespace sy {

namespace {

// Set from signal handlers (which may only touch lock-free atomics); agreed on at step boundaries.
// Bit 1: stop (SIGINT); bit 2: preempted (SIGTERM, SIGUSR1), which also saves and asks for a
// requeue. The all-reduce takes the maximum, so any rank's preemption makes every rank's >= 2.
std::atomic<int32_t> g_stop_requested{0};
extern "C" void request_stop(int) { g_stop_requested.fetch_or(1); }
extern "C" void request_preempt(int) { g_stop_requested.fetch_or(2); }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// 32 bits of (micro-batch, layer, dropped_digest), mixed (splitmix64's finaliser) so that the
// sum over micro-batches and layers identifies the dropped set; see StepRecord::dropped_digest.
int64_t drop_fingerprint(int64_t first_sample, int64_t layer, uint64_t digest) {
  uint64_t x = digest ^ (uint64_t(first_sample) * 0x9e3779b97f4a7c15ull) ^ (uint64_t(layer + 1) << 56);
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return int64_t(x >> 32);
}

void write_preempt_marker(const std::string& out_dir, int64_t step) {
  std::ofstream f(out_dir + "/" + kPreemptMarker);
  f << "step " << step << "\n";
}

DType parse_dtype(const std::string& s) {
  return s == "float64" ? DType::F64 : s == "bfloat16" ? DType::BF16 : DType::F32;
}

// Loss parts and expert loads of one step, summed over micro-batches, then over ranks.
struct StepTotals {
  std::vector<double> losses;      // ce, aux, z: means over the step's micro-batches
  std::vector<int64_t> counts;     // per MoE layer: E routed counts, then the dropped count
};

void summarise_experts(const std::vector<int64_t>& counts, int64_t n_layers, int64_t n_experts, int64_t assignments,
                       StepRecord& rec) {
  if (n_layers == 0 || assignments == 0) return;
  rec.expert_share_min = 1;
  rec.expert_share_max = 0;
  int64_t dropped = 0;
  rec.expert_tokens.assign(n_layers, {});
  for (int64_t l = 0; l < n_layers; ++l) {
    const int64_t* c = counts.data() + l * (n_experts + 1);
    for (int64_t e = 0; e < n_experts; ++e) {
      rec.expert_tokens[l].push_back(c[e]);
      rec.expert_share_min = std::min(rec.expert_share_min, double(c[e]) / double(assignments));
      rec.expert_share_max = std::max(rec.expert_share_max, double(c[e]) / double(assignments));
    }
    dropped += c[n_experts];
  }
  rec.dropped_share = double(dropped) / double(assignments * n_layers);
  rec.expert_imbalance = rec.expert_share_max * double(n_experts);  // the mean share is 1/E
}

void write_memory_report(const std::string& path, Model& model, const Optimizer& opt, const DataParallel& dp) {
  std::ofstream f(path);
  const ParamStore& ps = model.params();
  f << "{\"dense_params\":" << ps.segment(SegmentKind::Replicated).numel + ps.segment(SegmentKind::TpRows).numel
    << ",\"expert_params\":" << model.params().expert_segment().numel
    << ",\"parameter_bytes\":" << model.params().values().nbytes()
    << ",\"gradient_buffer_bytes\":" << model.params().grads().nbytes()
    << ",\"reduced_gradient_bytes\":" << dp.reduced_gradient_bytes() << ",\"optimizer_state_bytes\":" << opt.state_bytes()
    << ",\"optimizer_pieces\":[";
  for (size_t i = 0; i < opt.pieces().size(); ++i)
    f << (i ? "," : "") << "[" << opt.pieces()[i].begin << "," << opt.pieces()[i].end << "]";
  // The expert-side buffers' rows, summed over the held MoE layers: what routing imbalance made of
  // the dispatch buffers (the planner's test compares its prediction at this imbalance).
  int64_t received = 0, gathered = 0;
  for (const MoeLayer* m : model.moe_layers()) received += m->received_rows_peak(), gathered += m->gathered_rows_peak();
  f << "],\"moe_received_rows\":" << received << ",\"moe_gathered_rows\":" << gathered;
  // Peak bytes per category since start-up (engine/memory.h), from the backend's allocator.
  const MemoryCounters& mem = model.backend().memory();
  f << ",\"peak_bytes\":{";
  for (int c = 0; c < MemoryCounters::kN; ++c)
    f << (c ? "," : "") << "\"" << mem_category_name(MemCategory(c)) << "\":" << mem.peak[c];
  f << "},\"peak_total_bytes\":" << mem.total_peak << "}\n";
}

// Every rank contributes its pieces: each parameter once (the first rank of the group it is
// replicated over: DP for dense ones, EDP for experts); the optimizer moments by shard under ZeRO,
// else from the same rank as the parameter. Hands both to the writer, which saves now or in the
// background.
void save_train_state(CheckpointWriter& writer, RunContext& ctx, const Recipe& r, const std::string& out_dir,
                      Model& model, const Optimizer& opt, const DataParallel& dp, int64_t step) {
  // The router biases are the same on every rank of a stage: its (dp 0, tp 0) rank writes them.
  // A tied embedding's second copy (last pipeline stage) is the first stage's, which writes it.
  const bool tied_copy = ctx.holds_tied_copy();
  auto mine = [&](const ParamInfo& p) { return !(tied_copy && p.name == "embed.weight"); };
  StateSnapshot snap = snapshot_state(
      model, opt, ctx.dp->rank() == 0 && ctx.tp->rank() == 0,
      [&](const ParamInfo& p) { return mine(p) && dp.writes_value(p); },
      [&](const ParamInfo& p) { return mine(p) && dp.writes_moments(p); });
  SaveRequest req;
  req.out_dir = out_dir;
  req.step = step;
  req.pieces = std::move(snap.pieces);
  req.keep = int(r.checkpoint.keep);
  req.attrs = {{"recipe", r.resolved_toml},
               {"layout", "dp=" + std::to_string(ctx.dp->size()) + " ep=" + std::to_string(ctx.ep->size()) +
                              " tp=" + std::to_string(ctx.tp->size()) + " pp=" + std::to_string(ctx.pp->size()) +
                              " vpp=" + std::to_string(r.parallel.vpp) + " zero=" + std::to_string(r.parallel.zero)},
               {"seed", std::to_string(r.train.seed)},
               {"code_version", SY_CODE_VERSION},
               {"consumed_tokens", std::to_string(step * r.train.micro_batch * r.train.grad_accum * ctx.dp->size() *
                                                  r.model.seq_len)}};
  writer.save(std::move(snap), std::move(req));
}

// Runs a checkpoint action; a failure (the same CheckpointError on every rank, since saves agree
// on failure) stops training or is reported, as checkpoint.on_failure says.
template <class F> void guarded_save(const Recipe& r, bool rank0, F&& action) {
  try {
    action();
  } catch (const CheckpointError& e) {
    if (r.checkpoint.on_failure == "stop") throw;
    if (rank0) std::fprintf(stderr, "switchyard: warning: %s; training continues (checkpoint.on_failure=continue)\n", e.what());
  }
}

// A bad step changes nothing but the step counter: the optimizer's step count follows it (so the
// LR schedule and a checkpoint's step agree, as in an uninterrupted run) and the step's expert
// loads are dropped instead of moving the router biases.
void skip_update(Model& model, Optimizer& opt, OptimStepResult& upd, double grad_sq) {
  opt.restore_steps_taken(opt.steps_taken() + 1);
  for (auto* m : model.moe_layers()) std::fill(m->pending_load().begin(), m->pending_load().end(), 0);
  upd.grad_norm = std::sqrt(grad_sq);
  upd.lr = NAN;
}

}  // namespace

int run_training(const Recipe& r) {
  const TrainConfig& tc = r.train;
  RunContext ctx = make_run_context(r);
  Communicator& dpc = *ctx.dp;
  const bool rank0 = ctx.is_rank0();
  const std::string out_dir = tc.out_dir.empty() ? "runs/" + r.name : tc.out_dir;
  BatchSource train_data(r.data.train, r.model.seq_len, tc.seed, r.model.vocab_size);
  BatchSource val_data(r.data.val, r.model.seq_len, tc.seed, r.model.vocab_size);

  // Rank 0 prepares the output directory; its verdict reaches every rank, so a failure there
  // stops the whole job at once instead of leaving the others waiting in the next collective.
  std::error_code ec;
  int32_t failed = 0;
  if (rank0) {
    std::filesystem::create_directories(out_dir, ec);
    failed = ec ? 1 : 0;
    if (!failed) std::ofstream(out_dir + "/recipe.toml") << r.resolved_toml;
  }
  ctx.world->all_reduce(&failed, 1, CommType::I32, ReduceOp::Max);
  if (failed)
    throw ConfigError(out_dir + ": cannot create train.out_dir" + (rank0 ? " (" + ec.message() + ")" : std::string()) +
                      "; choose a writable path");
  // Checkpoints: stale .tmp directories go (one rank, after a barrier); then the newest
  // checkpoint that verifies, if any, is where this run starts.
  remove_stale_tmp(*ctx.world, out_dir);
  const std::string resume_dir = resume_directory(r.checkpoint.resume, out_dir);
  std::unique_ptr<CheckpointReader> resume_ckpt = resume_dir.empty() ? nullptr : std::make_unique<CheckpointReader>(resume_dir);
  if (rank0) {
    if (resume_ckpt)
      keep_records_up_to(out_dir + "/metrics.jsonl", resume_ckpt->step());
    else
      std::filesystem::remove(out_dir + "/metrics.jsonl", ec);  // a fresh run starts a fresh log
  }
  std::unique_ptr<MetricsLog> metrics = rank0 ? std::make_unique<MetricsLog>(out_dir + "/metrics.jsonl") : nullptr;

  ChosenBackend chosen = make_backend_for(r.engine, ctx.env.local_rank, tc.dtype == "bfloat16");
  Backend* backend = chosen.backend.get();
  // The backend's buffers move over MPI (host memory: cpu, cuda-emu) or NCCL (a GPU; cuda-emu
  // with parallel.comm=nccl); host scalars over the host groups of ctx either way.
  BufferComms bufs = make_buffer_comms(r, ctx, chosen);
  auto ep_stats = [&] {
    CommStats s = ctx.ep->stats();
    if (bufs.ep) s.add(bufs.ep->stats());
    return s;
  };
  auto bytes_sent = [](Communicator& host, const std::unique_ptr<Communicator>& b) {
    return host.stats().bytes_sent + (b ? b->stats().bytes_sent : 0);
  };
  // Expert parallelism: each rank holds and computes its EP rank's run of experts in every MoE
  // layer and exchanges token rows with the rest of its EP group (docs/parallel.md).
  // Tensor parallelism: each rank holds its TP rank's block of every split matrix.
  CommTensorParallel tp_comm(*ctx.tp, *backend, bufs.tp.get());
  ModelShard shard{{}, dpc.size(), ctx.edp->size(), TpPlace{&tp_comm, r.parallel.sp}, PipePlace{}};
  if (ctx.ep->size() > 1) {
    const int64_t held = r.model.n_experts / ctx.ep->size();
    shard.experts = {ctx.ep->rank() * held, held};
  }
  // Expert tensor parallelism: each rank holds its ETP rank's slice of every expert it holds, and
  // the layers gather and scatter expert rows over the ETP group.
  shard.experts.slice = ctx.etp->rank();
  shard.experts.slices = ctx.etp->size();
  CommTokenExchange etp_exchange(*ctx.etp, bufs.etp.get());
  // Pipeline parallelism: each rank holds its stage's chunks of layers (docs/parallel.md).
  const int n_pp = ctx.pp->size(), vpp = int(r.parallel.vpp);
  if (n_pp > 1) shard.pipe = pipeline_place(r.model.n_layers, n_pp, vpp, ctx.pp->rank(), r.parallel.pp_layers);
  Model model(r.model, *backend, parse_dtype(tc.dtype), tc.seed, shard);
  std::unique_ptr<PipelineExecutor> pipe;
  if (n_pp > 1) {
    pipe = std::make_unique<PipelineExecutor>(*ctx.pp, *backend, build_schedule(n_pp, vpp, int(tc.grad_accum)));
    model.prepare(tc.micro_batch, r.model.seq_len);  // the chunks' inputs must exist before the first receive
  }
  const int64_t bucket_elems = int64_t(r.parallel.bucket_mb * 1024 * 1024) / int64_t(dtype_size(model.param_dtype()));
  // Overlap: the last micro-batch's backward starts each gradient bucket's reduction as it
  // completes (not across pipeline stages, whose backward the executor interleaves).
  const bool overlap = r.parallel.overlap_grad_reduce && n_pp == 1;
  DataParallel dp({&dpc, ctx.tp.get(), ctx.ep.get(), ctx.edp.get(), ctx.world.get(), ctx.etp.get(), ctx.pp.get(),
                   bufs.dp.get(), bufs.tp.get(), bufs.edp.get()},
                  *backend, model.params(), int(r.parallel.zero), bucket_elems, overlap);
  if (overlap) model.set_gradient_listener(&dp);
  CommTokenExchange exchange(*ctx.ep, bufs.ep.get());
  if (ctx.ep->size() > 1)
    for (auto* m : model.moe_layers()) m->set_token_exchange(&exchange);
  if (ctx.etp->size() > 1)
    for (auto* m : model.moe_layers()) m->set_expert_tp_exchange(&etp_exchange);
  OptimShard opt_shard = dp.optimizer_shard();
  const int embed_id = model.params().find("embed.weight");
  if (ctx.holds_tied_copy()) {  // counted in the gradient norm on the first stage
    const ParamInfo& e = model.params().infos()[size_t(embed_id)];
    opt_shard.norm_excluded.emplace_back(e.offset, e.offset + e.numel);
  }
  Optimizer opt(r.optim, model.params(), *backend, tc.steps, opt_shard);
  CheckpointWriter writer(*ctx.world, r.checkpoint.async);
  int64_t step = 0;
  if (!resume_ckpt && !tc.init_weights.empty()) {
    load_weights(model, tc.init_weights);
    if (rank0) std::printf("switchyard: parameters start from %s\n", tc.init_weights.c_str());
  }
  if (resume_ckpt) {
    step = restore_state(*resume_ckpt, model, opt);
    if (rank0) std::printf("switchyard: resumed from %s after step %ld\n", resume_dir.c_str(), long(step));
    resume_ckpt.reset();
  }
  write_memory_report(out_dir + "/memory.rank" + std::to_string(ctx.world->rank()) + ".json", model, opt, dp);
  // The watchdog's view of this rank (trainer/heartbeat.h); the NaN guard and the data windows
  // earlier rollbacks skipped (a fresh run starts without any).
  Heartbeat beat(out_dir + "/heartbeat", ctx.world->rank());
  for (Communicator* c : {ctx.world.get(), ctx.dp.get(), ctx.tp.get(), ctx.ep.get(), ctx.edp.get(), ctx.etp.get(), ctx.pp.get(),
                          bufs.dp.get(), bufs.tp.get(), bufs.ep.get(), bufs.edp.get(), bufs.etp.get()})
    if (c) c->set_observer(&beat);
  if (ctx.embed) ctx.embed->set_observer(&beat);
  beat.set_step(step);
  DataSkips skips = step > 0 ? DataSkips::load(out_dir) : DataSkips{};
  if (rank0 && step == 0) std::filesystem::remove(DataSkips::path(out_dir), ec);
  BadStepGuard guard(tc.max_bad_steps);

  // The step's global batch: micro_batch * grad_accum * dp sequences; rank d's micro-batch a of
  // step s holds samples s * G + (a * dp + d) * micro_batch + [0, micro_batch), so one rank with
  // grad_accum * dp micro-batches sees exactly the same samples in the same groups.
  const int64_t n_dp = dpc.size();
  const int64_t global_seqs = tc.micro_batch * tc.grad_accum * n_dp;
  const int64_t tokens_per_step = global_seqs * r.model.seq_len;
  const double flops_per_token = model.train_flops_per_token();
  int64_t total_params = model.total_params();  // each stage its own layers
  if (ctx.holds_tied_copy()) total_params -= r.model.vocab_size * r.model.d_model;
  if (n_pp > 1) ctx.pp->all_reduce(&total_params, 1, CommType::I64, ReduceOp::Sum);
  if (rank0) {
    const std::string pp_text = n_pp > 1 ? pipeline_layout_text(r.model.n_layers, n_pp, vpp, r.parallel.pp_layers) : "";
    std::printf("switchyard: %s | %s %s | %d rank(s), dp=%ld ep=%d tp=%d%s%s%s zero=%ld%s | %.2fM parameters, %.2fM active per token | "
                "%.1f MFLOP/token | %ld tokens/step | peak %.0f GFLOP/s\n",
                r.name.c_str(), chosen.device.c_str(), tc.dtype.c_str(), ctx.world->size(), long(n_dp), ctx.ep->size(), ctx.tp->size(),
                r.parallel.sp && ctx.tp->size() > 1 ? " sp" : "",
                ctx.etp->size() > 1 ? (" etp=" + std::to_string(ctx.etp->size())).c_str() : "", pp_text.c_str(),
                long(r.parallel.zero),
                ctx.world->size() > 1 ? (" comm=" + bufs.kind + (overlap ? " overlap" : "")).c_str() : "", total_params / 1e6, model.active_params_per_token() / 1e6, flops_per_token / 1e6,
                long(tokens_per_step), tc.peak_gflops);
    std::fflush(stdout);
  }

  g_stop_requested = 0;
  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_preempt);
  std::signal(SIGUSR1, request_preempt);

  const auto start = Clock::now();
  const int64_t first_step = step;
  auto window_start = Clock::now();
  int64_t window_tokens = 0;
  // MoE layers of the whole model (a pipeline stage holds some of them), and the global index of
  // each of this rank's chunks' first MoE layer.
  const int64_t n_moe = moe_layers_before(r.model, r.model.n_layers), n_exp = r.model.n_experts;
  std::vector<int64_t> chunk_moe_base;
  for (const auto& chunk : model.pipe().chunks) chunk_moe_base.push_back(moe_layers_before(r.model, chunk.first));
  std::vector<int64_t> window_counts(n_moe * (n_exp + 1) + 1, 0);
  double last_val = NAN;
  std::string stop_reason = "finished";
  // A run resumed at or past train.stop_at_step does no step: it writes its state back (when
  // checkpoints are on) and stops, which turns a checkpoint into this layout's checkpoint.
  const bool resumed_past_stop = tc.stop_at_step > 0 && step >= tc.stop_at_step;
  if (resumed_past_stop) {
    if (r.checkpoint.every_steps > 0)
      guarded_save(r, rank0, [&] {
        save_train_state(writer, ctx, r, out_dir, model, opt, dp, step);
        writer.finish();
      });
    stop_reason = "reached train.stop_at_step";
  }
  int exit_code = kExitOk;
  while (!resumed_past_stop && step < tc.steps) {
    beat.set_phase("forward_backward");
    maybe_stall_for_test(ctx.world->rank(), step + 1);
    maybe_delay_step_for_test();
    backend->fill(model.params().grads(), 0);
    // counts: per MoE layer E routed counts and the dropped count, then the dropped-set
    // fingerprint (StepRecord::dropped_digest); summed over DP.
    // losses: ce, aux, z, and the seconds this rank spent in token exchanges (averaged over ranks).
    // losses[4]: the sum of squares of this rank's gradients, for the NaN guard (averaged like
    // the rest, so a non-finite value on any rank reaches every rank).
    StepTotals t{std::vector<double>(5, 0.0), std::vector<int64_t>(n_moe * (n_exp + 1) + 1, 0)};
    const int64_t window = skips.window(step);
    const bool nan_fault = nan_fault_for_test(ctx.world->rank(), window);
    for (Communicator* c : {ctx.ep.get(), ctx.tp.get(), ctx.etp.get(), bufs.ep.get(), bufs.tp.get(), bufs.etp.get()})
      if (c) c->stats().reset();
    exchange.reset_seconds();
    int64_t rows_off_rank = 0, rows_in_off_rank = 0;
    const double loss_scale = nan_fault ? NAN : 1.0 / double(tc.grad_accum);
    auto first_sample = [&](int64_t a) { return window * global_seqs + (a * n_dp + dpc.rank()) * tc.micro_batch; };
    auto batch_of = [&](int a) { return train_data.sampled(first_sample(a), tc.micro_batch); };
    // moe_base: the global index of the parts' first MoE layer.
    auto account = [&](int64_t a, int64_t moe_base, const LossParts& parts) {
      t.losses[0] += parts.ce / double(tc.grad_accum);
      t.losses[1] += parts.aux / double(tc.grad_accum);
      t.losses[2] += parts.z / double(tc.grad_accum);
      for (size_t k = 0; k < parts.moe.size(); ++k) {
        const int64_t l = moe_base + int64_t(k);
        for (int64_t e = 0; e < n_exp; ++e) t.counts[l * (n_exp + 1) + e] += parts.moe[k].routed[e];
        t.counts[l * (n_exp + 1) + n_exp] += parts.moe[k].dropped;
        t.counts[n_moe * (n_exp + 1)] += drop_fingerprint(first_sample(a), l, parts.moe[k].dropped_digest);
        rows_off_rank += parts.moe[k].rows_sent_off_rank;
        rows_in_off_rank += parts.moe[k].rows_received_off_rank;
      }
    };
    PipeStepStats pipe_stats;
    if (!pipe) {
      for (int64_t a = 0; a < tc.grad_accum; ++a) {
        if (a + 1 == tc.grad_accum) dp.arm();  // only the last backward completes the gradients
        account(a, 0, model.forward_backward(batch_of(int(a)), loss_scale));
      }
    } else {
      // Each micro-batch is read once; its chunks' forwards, recomputes and backwards share it.
      std::vector<HostBatch> batches;
      for (int a = 0; a < int(tc.grad_accum); ++a) batches.push_back(batch_of(a));
      ModelPipelineStage stage(
          model, [&](int m) -> const HostBatch& { return batches[size_t(m)]; }, loss_scale,
          [&](int c, int m, const LossParts& parts) { account(m, chunk_moe_base[size_t(c)], parts); });
      pipe_stats = pipe->run(stage);
      // The loss is on the last stage, each stage's aux and z losses and loads its own layers'.
      ctx.pp->all_reduce(t.losses.data(), 3, CommType::F64, ReduceOp::Sum);
      if (!t.counts.empty()) ctx.pp->all_reduce(t.counts.data(), int64_t(t.counts.size()), CommType::I64, ReduceOp::Sum);
    }
    // A rank sends its S rows bound for other ranks' experts twice (dispatch, and the adjoint of
    // combine) and the R rows it received back twice (combine, and the adjoint of dispatch):
    // 2 (S + R) x d_model x element size, plus each forward's count exchange (docs/parallel.md).
    // Per rank, counted by the communicator and from the routing, gathered over the world (an EP
    // group may span TP peers, which a DP reduction leaves out); [2]: anything else the EP
    // communicator carried during forward and backward (no token all-gather: must stay 0).
    std::vector<int64_t> a2a_by_rank;
    int64_t a2a[2] = {0, 0};
    if (ctx.ep->size() > 1) {
      const int64_t elem = int64_t(dtype_size(model.dtype())), n_local = n_exp / ctx.ep->size();
      const CommStats es = ep_stats();
      const int64_t counted = es.bytes_by_op.count("all_to_all_v") ? es.bytes_by_op.at("all_to_all_v") : 0;
      const int64_t mine[3] = {counted,
                               2 * (rows_off_rank + rows_in_off_rank) * r.model.d_model * elem +
                                   tc.grad_accum * n_moe * (ctx.ep->size() - 1) * n_local * 8,
                               es.bytes_sent - counted};
      a2a_by_rank.resize(3 * size_t(ctx.world->size()));
      ctx.world->all_gather(mine, a2a_by_rank.data(), 3, CommType::I64);
      for (int q = 0; q < ctx.world->size(); ++q)
        for (int j = 0; j < 2; ++j) a2a[j] += a2a_by_rank[3 * q + j];
    }
    // Tied embeddings across stages: the lookup's gradient (first stage) plus the head's (last).
    if (ctx.embed) {
      const Tensor g = model.params().grad(embed_id);
      ctx.embed->all_reduce(g.raw(), g.numel(), comm_type_of(g.dtype()), ReduceOp::Sum);
    }
    dp.reduce_gradients();
    // For the guard, before the update: the optimizer applies it in the call that computes the
    // global norm, so the guard must know first. Of the reduced gradients (a non-finite value on
    // any rank reaches them all): with overlap the reduction had started in the backward.
    t.losses[4] = backend->sum_squares(model.params().grads());
    if (n_pp > 1) ctx.pp->all_reduce(&t.losses[4], 1, CommType::F64, ReduceOp::Sum);
    t.losses[3] = exchange.seconds();
    dpc.all_reduce(t.losses.data(), 5, CommType::F64, ReduceOp::Avg);
    if (!t.counts.empty()) dpc.all_reduce(t.counts.data(), int64_t(t.counts.size()), CommType::I64, ReduceOp::Sum);
    beat.set_phase("optimizer");
    // The averages above are the same on every rank of a DP group, but TP peers (in other DP
    // groups) hold other gradient blocks: one flag over the world makes the verdict the same on
    // every rank, so no rank updates while a peer skips.
    double bad = std::isfinite(t.losses[0]) && std::isfinite(t.losses[4]) ? 0.0 : 1.0;
    if (ctx.world->size() > dpc.size()) ctx.world->all_reduce(&bad, 1, CommType::F64, ReduceOp::Max);
    const StepVerdict verdict = guard.judge(bad > 0 ? NAN : t.losses[0], t.losses[4], step);
    OptimStepResult upd;
    int64_t tp_bytes = 0;
    if (verdict == StepVerdict::Update) {
      upd = opt.step();
      dp.gather_parameters();
      tp_bytes = bytes_sent(*ctx.tp, bufs.tp);
      // The aux-free bias follows the global load (as one rank with every micro-batch sees it), so
      // every rank moves its copy of the bias identically.
      if (dpc.size() > 1 && r.model.router_bias_update_rate > 0)
        for (auto* m : model.moe_layers()) dpc.all_reduce(m->pending_load().data(), n_exp, CommType::I64, ReduceOp::Sum);
      model.update_router_biases();
    } else {
      skip_update(model, opt, upd, t.losses[4]);
      if (verdict == StepVerdict::RollBack) {
        guarded_save(r, rank0, [&] { writer.finish(); });  // a save in flight is committed first
        const int64_t bad_first = guard.run_first(), bad_n = guard.run_length();
        guard.rolled_back();
        const int64_t back_to = load_newest_checkpoint(out_dir, model, opt);
        const auto [at, n] = skip_for_rollback(back_to, bad_first, bad_n);
        skips.add(at, n);
        if (rank0) {
          skips.save(out_dir);
          metrics.reset();  // the trim replaces the file: reopen it after
          keep_records_up_to(out_dir + "/metrics.jsonl", back_to);
          metrics = std::make_unique<MetricsLog>(out_dir + "/metrics.jsonl");
          std::printf("switchyard: %ld non-finite steps in a row (steps %ld-%ld); rolled back to step %ld and skip "
                      "%ld data window(s) from step %ld on (rollback %ld)\n",
                      long(bad_n), long(bad_first + 1), long(bad_first + bad_n), long(back_to), long(n), long(at + 1),
                      long(guard.rollbacks()));
          std::fflush(stdout);
        }
        step = back_to;
        beat.set_step(step);
        std::fill(window_counts.begin(), window_counts.end(), 0);
        window_tokens = 0;
        continue;
      }
    }
    for (size_t i = 0; i < t.counts.size(); ++i) window_counts[i] += t.counts[i];
    window_tokens += tokens_per_step;
    ++step;
    beat.set_step(step);

    // Every rank must agree to stop at the same step: one tiny all-reduce of the local reasons.
    // The same all-reduce carries each rank's vote on a background checkpoint write still running.
    int32_t stop[3] = {int32_t(tc.max_minutes > 0 && seconds_since(start) / 60.0 >= tc.max_minutes),
                       g_stop_requested.load(), writer.busy()};
    ctx.world->all_reduce(stop, 3, CommType::I32, ReduceOp::Max);
    if (writer.in_flight() && stop[2] == 0) guarded_save(r, rank0, [&] { writer.finish(); });
    const bool stop_here = tc.stop_at_step > 0 && step >= tc.stop_at_step;
    const bool stopping = stop[0] || stop[1] || stop_here || step == tc.steps;
    const bool preempted = stop[1] >= 2;
    const bool eval_now = stopping || (tc.eval_every > 0 && step % tc.eval_every == 0);
    if (step % tc.log_every == 0 || eval_now || verdict != StepVerdict::Update) {
      StepRecord rec;
      rec.step = step;
      rec.total_steps = tc.steps;
      rec.loss = t.losses[0];
      rec.aux_loss = t.losses[1];
      rec.z_loss = t.losses[2];
      rec.lr = upd.lr;
      rec.grad_norm = upd.grad_norm;
      rec.skipped = verdict != StepVerdict::Update;
      rec.skipped_steps = guard.skipped_total();
      rec.rollbacks = guard.rollbacks();
      rec.tokens_per_s = double(window_tokens) / seconds_since(window_start);
      rec.mfu = rec.tokens_per_s * flops_per_token / (tc.peak_gflops * 1e9 * ctx.world->size());
      rec.eta_s = seconds_since(start) / double(std::max<int64_t>(1, step - first_step)) * double(tc.steps - step);
      summarise_experts(window_counts, n_moe, n_exp, window_tokens * r.model.top_k, rec);
      if (n_moe > 0) rec.dropped_digest = window_counts[n_moe * (n_exp + 1)];
      if (ctx.ep->size() > 1) {
        rec.a2a_bytes = a2a[0];
        rec.a2a_bytes_routing = a2a[1];
        for (int q = 0; q < ctx.world->size() && !a2a_by_rank.empty(); ++q) {
          rec.a2a_bytes_by_rank.push_back(a2a_by_rank[3 * q]);
          rec.a2a_routing_by_rank.push_back(a2a_by_rank[3 * q + 1]);
          rec.ep_other_bytes_by_rank.push_back(a2a_by_rank[3 * q + 2]);
        }
        rec.a2a_seconds = t.losses[3];
      }
      if (ctx.tp->size() > 1) rec.tp_bytes = tp_bytes;
      if (ctx.etp->size() > 1) rec.etp_bytes = bytes_sent(*ctx.etp, bufs.etp);
      if (dp.buckets() > 0) rec.buckets_in_backward = dp.buckets_started_in_backward(), rec.buckets = dp.buckets();
      record_memory_peaks(*ctx.world, backend->memory(), rec);
      if (n_pp > 1) record_pipeline_stats(*ctx.pp, pipe_stats, rec);
      if (eval_now) beat.set_phase("evaluate");
      if (eval_now) {
        std::function<double(const HostBatch&)> pipe_ce;
        if (pipe)
          pipe_ce = [&](const HostBatch& b) {
            double ce = 0;
            ModelPipelineStage stage(model, [&](int) -> const HostBatch& { return b; }, 0.0,
                                     [&](int, int, const LossParts& parts) { ce += parts.ce; });
            pipe->run_forward_only(stage, 1);
            return ce;
          };
        rec.val_loss = last_val = evaluate(model, val_data, tc.micro_batch, tc.eval_batches * tc.micro_batch, dpc,
                                           pipe_ce, ctx.pp.get());
      }
      if (rank0) {
        std::printf("%s\n", progress_line(rec).c_str());
        std::fflush(stdout);
        metrics->write(rec);
      }
      std::fill(window_counts.begin(), window_counts.end(), 0);
      window_tokens = 0;
      window_start = Clock::now();
    }
    // A preempted job always saves: its requeued self resumes from this checkpoint.
    if ((r.checkpoint.every_steps > 0 && (step % r.checkpoint.every_steps == 0 || stopping)) || preempted) {
      beat.set_phase("checkpoint");
      guarded_save(r, rank0, [&] { save_train_state(writer, ctx, r, out_dir, model, opt, dp, step); });
    }
    if (stopping) {
      guarded_save(r, rank0, [&] { writer.finish(); });  // exit waits for a save in flight
      if (stop_here) stop_reason = "reached train.stop_at_step";
      if (stop[0]) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "time budget of %g minutes reached", tc.max_minutes);
        stop_reason = buf;
      }
      else if (preempted) {
        stop_reason = "preempted (SIGTERM/SIGUSR1): checkpoint saved, exit code 75 asks for a requeue";
        exit_code = kExitPreempted;
        // The batch script requeues on this file as well as on exit code 75: srun's
        // --kill-on-bad-exit may kill a slower rank once the first exits 75, and srun then
        // reports that rank's signal instead (docs/launch.md).
        if (rank0) write_preempt_marker(out_dir, step);
      } else if (stop[1]) stop_reason = "stopped by signal";
      break;
    }
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGUSR1, SIG_DFL);
  beat.set_phase("finished");
  write_memory_report(out_dir + "/memory.rank" + std::to_string(ctx.world->rank()) + ".json", model, opt, dp);
  if (rank0)
    std::printf("switchyard: %s after %ld steps in %.1f min; final val loss %.4f nats/token\n", stop_reason.c_str(),
                long(step), seconds_since(start) / 60.0, last_val);
  // Every TP group gathers its blocks and every EP group its experts (collective); rank 0 writes.
  if (!tc.save_weights.empty()) {
    save_weights(model, tc.save_weights, {{"recipe", r.resolved_toml}, {"step", std::to_string(step)}},
                 {ctx.tp.get(), ctx.ep.get(), ctx.etp.get(), ctx.pp.get()}, rank0);
    if (rank0) std::printf("switchyard: weights written to %s\n", tc.save_weights.c_str());
  }
  ctx.world->barrier();
  return exit_code;
}

int run_eval(const Recipe& r, const std::string& weights, const std::string& data, int64_t windows) {
  auto backend = make_cpu_backend();
  // Evaluation runs on the CPU reference; a bfloat16 run's weights are its float32 masters.
  Model model(r.model, *backend, accum_dtype(parse_dtype(r.train.dtype)), r.train.seed);
  load_weights(model, weights);
  BatchSource src(data, r.model.seq_len, r.train.seed, r.model.vocab_size);
  const int64_t n = std::min(windows, src.windows());
  const int64_t mb = std::max<int64_t>(1, std::min(r.train.micro_batch, n));
  auto local = make_local_comm();
  const double loss = evaluate(model, src, mb, n, *local);
  std::printf("eval: %s over %ld windows of %ld tokens: loss %.6f nats/token\n", data.c_str(), long(n / mb * mb),
              long(r.model.seq_len), loss);
  return 0;
}

}  // namespace sy
