#include "trainer/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/config_error.h"
#include "engine/model.h"
#include "optim/optimizer.h"
#include "trainer/batch_source.h"
#include "trainer/metrics_log.h"
#include "trainer/weights_file.h"

namespace sy {

namespace {

// Set from signal handlers (which may only touch lock-free atomics); checked at step boundaries.
std::atomic<bool> g_stop_requested{false};
extern "C" void request_stop(int) { g_stop_requested = true; }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

DType parse_dtype(const std::string& s) { return s == "float64" ? DType::F64 : DType::F32; }

// Mean cross-entropy over whole micro-batches of windows read in file order.
double evaluate(Model& model, const BatchSource& data, int64_t micro_batch, int64_t max_windows) {
  const int64_t windows = std::min(max_windows, data.windows());
  const int64_t batches = windows / micro_batch;
  if (batches == 0)
    throw ConfigError("evaluation needs at least train.micro_batch=" + std::to_string(micro_batch) +
                      " windows of model.seq_len+1 tokens; use a larger validation file or a smaller micro_batch");
  double sum = 0;
  for (int64_t b = 0; b < batches; ++b) sum += model.forward(data.in_order(b * micro_batch, micro_batch)).ce;
  return sum / double(batches);
}

void summarise_experts(const std::vector<std::vector<int64_t>>& tokens, const std::vector<int64_t>& dropped,
                       int64_t assignments_per_layer, StepRecord& rec) {
  if (tokens.empty()) return;
  rec.expert_share_min = 1;
  rec.expert_share_max = 0;
  int64_t all_dropped = 0;
  for (size_t l = 0; l < tokens.size(); ++l) {
    for (int64_t c : tokens[l]) {
      const double share = double(c) / double(assignments_per_layer);
      rec.expert_share_min = std::min(rec.expert_share_min, share);
      rec.expert_share_max = std::max(rec.expert_share_max, share);
    }
    all_dropped += dropped[l];
  }
  rec.dropped_share = double(all_dropped) / double(assignments_per_layer * int64_t(tokens.size()));
  rec.expert_tokens = tokens;
}

}  // namespace

int run_training(const Recipe& r) {
  const TrainConfig& tc = r.train;
  const std::string out_dir = tc.out_dir.empty() ? "runs/" + r.name : tc.out_dir;
  BatchSource train_data(r.data.train, r.model.seq_len, tc.seed, r.model.vocab_size);
  BatchSource val_data(r.data.val, r.model.seq_len, tc.seed, r.model.vocab_size);

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw ConfigError(out_dir + ": cannot create train.out_dir (" + ec.message() + "); choose a writable path");
  { std::ofstream(out_dir + "/recipe.toml") << r.resolved_toml; }
  std::filesystem::remove(out_dir + "/metrics.jsonl", ec);  // a fresh run starts a fresh log
  MetricsLog metrics(out_dir + "/metrics.jsonl");

  auto backend = make_cpu_backend();
  Model model(r.model, *backend, parse_dtype(tc.dtype), tc.seed);
  Optimizer opt(r.optim, model.params(), *backend, tc.steps);

  const int64_t tokens_per_step = tc.micro_batch * tc.grad_accum * r.model.seq_len;
  const double flops_per_token = model.train_flops_per_token();
  std::printf("switchyard: %s | %.2fM parameters, %.2fM active per token | %.1f MFLOP/token | %ld tokens/step | "
              "peak %.0f GFLOP/s\n",
              r.name.c_str(), model.params().total_numel() / 1e6, model.active_params_per_token() / 1e6,
              flops_per_token / 1e6, long(tokens_per_step), tc.peak_gflops);
  std::fflush(stdout);

  g_stop_requested = false;
  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_stop);

  const auto start = Clock::now();
  auto window_start = Clock::now();
  int64_t window_tokens = 0;
  const size_t n_moe = model.moe_layers().size();
  std::vector<std::vector<int64_t>> expert_tokens(n_moe, std::vector<int64_t>(r.model.n_experts, 0));
  std::vector<int64_t> dropped(n_moe, 0);
  double last_val = NAN;
  int64_t step = 0;
  std::string stop_reason = "finished";
  for (; step < tc.steps; ++step) {
    backend->fill(model.params().grads(), 0);
    double ce = 0, aux = 0, z = 0;
    for (int64_t a = 0; a < tc.grad_accum; ++a) {
      const int64_t first = (step * tc.grad_accum + a) * tc.micro_batch;
      LossParts parts = model.forward_backward(train_data.sampled(first, tc.micro_batch), 1.0 / double(tc.grad_accum));
      ce += parts.ce / double(tc.grad_accum);
      aux += parts.aux / double(tc.grad_accum);
      z += parts.z / double(tc.grad_accum);
      for (size_t l = 0; l < n_moe; ++l) {
        for (int64_t e = 0; e < r.model.n_experts; ++e) expert_tokens[l][e] += parts.moe[l].routed[e];
        dropped[l] += parts.moe[l].dropped;
      }
    }
    if (!std::isfinite(ce))
      throw std::runtime_error("loss is " + std::to_string(ce) + " at step " + std::to_string(step + 1) +
                               "; lower optim.lr or raise optim.warmup_steps");
    const OptimStepResult upd = opt.step();
    model.update_router_biases();
    window_tokens += tokens_per_step;

    const int64_t done = step + 1;
    const double elapsed_min = seconds_since(start) / 60.0;
    const bool out_of_time = tc.max_minutes > 0 && elapsed_min >= tc.max_minutes;
    const bool stopping = out_of_time || g_stop_requested || done == tc.steps;
    const bool eval_now = stopping || (tc.eval_every > 0 && done % tc.eval_every == 0);
    if (done % tc.log_every == 0 || eval_now) {
      StepRecord rec;
      rec.step = done;
      rec.total_steps = tc.steps;
      rec.loss = ce;
      rec.aux_loss = aux;
      rec.z_loss = z;
      rec.lr = upd.lr;
      rec.grad_norm = upd.grad_norm;
      rec.tokens_per_s = double(window_tokens) / seconds_since(window_start);
      rec.mfu = rec.tokens_per_s * flops_per_token / (tc.peak_gflops * 1e9);
      rec.eta_s = seconds_since(start) / double(done) * double(tc.steps - done);
      summarise_experts(expert_tokens, dropped, window_tokens * r.model.top_k, rec);
      if (eval_now) rec.val_loss = last_val = evaluate(model, val_data, tc.micro_batch, tc.eval_batches * tc.micro_batch);
      std::printf("%s\n", progress_line(rec).c_str());
      std::fflush(stdout);
      metrics.write(rec);
      for (auto& v : expert_tokens) std::fill(v.begin(), v.end(), 0);
      std::fill(dropped.begin(), dropped.end(), 0);
      window_tokens = 0;
      window_start = Clock::now();
    }
    if (stopping) {
      if (out_of_time) stop_reason = "time budget of " + std::to_string(tc.max_minutes) + " minutes reached";
      else if (g_stop_requested) stop_reason = "stopped by signal";
      ++step;
      break;
    }
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  std::printf("switchyard: %s after %ld steps in %.1f min; final val loss %.4f nats/token\n", stop_reason.c_str(),
              long(step), seconds_since(start) / 60.0, last_val);
  if (!tc.save_weights.empty()) {
    save_weights(model, tc.save_weights, {{"recipe", r.resolved_toml}, {"step", std::to_string(step)}});
    std::printf("switchyard: weights written to %s\n", tc.save_weights.c_str());
  }
  return 0;
}

int run_eval(const Recipe& r, const std::string& weights, const std::string& data, int64_t windows) {
  auto backend = make_cpu_backend();
  Model model(r.model, *backend, parse_dtype(r.train.dtype), r.train.seed);
  load_weights(model, weights);
  BatchSource src(data, r.model.seq_len, r.train.seed, r.model.vocab_size);
  const int64_t n = std::min(windows, src.windows());
  const int64_t mb = std::max<int64_t>(1, std::min(r.train.micro_batch, n));
  const double loss = evaluate(model, src, mb, n);
  std::printf("eval: %s over %ld windows of %ld tokens: loss %.6f nats/token\n", data.c_str(), long(n / mb * mb),
              long(r.model.seq_len), loss);
  return 0;
}

}  // namespace sy
