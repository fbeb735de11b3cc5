// Training-step throughput of a recipe on this machine: tokens/s, MFU against the measured
// fp32 GEMM peak, and peak resident memory.
//   bench_train RECIPE [--steps N] [--set section.key=value ...]
// MFU = tokens/s * FLOPs per token / peak, FLOPs per token = 6 * active parameters
// + 6 * n_layers * n_heads * (qk + v head widths) * seq_len (docs/model.md).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "config/recipe.h"
#include "engine/model.h"
#include "engine/rng.h"
#include "optim/optimizer.h"
#include "trainer/batch_source.h"

using namespace sy;
using Clock = std::chrono::steady_clock;

static double secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

// Best of several runs of C = A B^T at one shape, in GFLOP/s.
static double gemm_gflops(Backend& be, int64_t m, int64_t n, int64_t k, int reps) {
  Tensor a = be.empty({m, k}, DType::F32), b = be.empty({n, k}, DType::F32), c = be.empty({m, n}, DType::F32);
  be.fill(a, 0.01);
  be.fill(b, 0.02);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    be.gemm(a, false, b, true, c, 1, 0);
    best = std::max(best, 2.0 * m * n * k / secs(t) / 1e9);
  }
  return best;
}

int main(int argc, char** argv) {
  const auto args = bench::parse_bench_args(argc, argv, "bench_train", 20);
  if (!args) return 2;
  const int steps = args->steps;
  try {
    const Recipe r = load_recipe(args->recipe, args->sets);
    auto be = make_cpu_backend();
    const double peak = std::max(gemm_gflops(*be, 4096, 4096, 4096, 3), gemm_gflops(*be, 2048, 256, 256, 20));
    Model model(r.model, *be, DType::F32, r.train.seed);
    Optimizer opt(r.optim, model.params(), *be, steps + 3);
    BatchSource data(r.data.train, r.model.seq_len, r.train.seed, r.model.vocab_size);
    const int64_t tokens = r.train.micro_batch * r.train.grad_accum * r.model.seq_len;
    auto one_step = [&](int64_t s) {
      be->fill(model.params().grads(), 0);
      for (int64_t a = 0; a < r.train.grad_accum; ++a)
        model.forward_backward(data.sampled((s * r.train.grad_accum + a) * r.train.micro_batch, r.train.micro_batch),
                               1.0 / double(r.train.grad_accum));
      opt.step();
      model.update_router_biases();
    };
    for (int s = 0; s < 3; ++s) one_step(s);  // warm-up: first-touch of buffers, oneDNN kernel selection
    auto t = Clock::now();
    for (int s = 0; s < steps; ++s) one_step(3 + s);
    const double dt = secs(t);
    const double tps = double(tokens) * steps / dt;
    const double flops = model.train_flops_per_token();
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("recipe %s: %.2fM params (%.2fM active), %ld tokens/step, %.2f MFLOP/token\n", r.name.c_str(),
                model.params().total_numel() / 1e6, model.active_params_per_token() / 1e6, long(tokens), flops / 1e6);
    std::printf("measured sgemm peak: %.0f GFLOP/s\n", peak);
    std::printf("step: %.1f ms | %.0f tokens/s | %.0f GFLOP/s | MFU %.1f%% of measured peak | peak RSS %.0f MiB\n",
                1e3 * dt / steps, tps, tps * flops / 1e9, 100 * tps * flops / (peak * 1e9), ru.ru_maxrss / 1024.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
