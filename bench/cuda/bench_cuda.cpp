// The GPU benchmark (scripts/gpu-check.sh runs it): cuBLASLt's measured GEMM peak in this run,
// then training steps of a recipe through the CUDA backend (float32): tokens/s, MFU against the
// H100's 989 TFLOP/s dense bf16 and against the measured peak, and peak device memory. Prints one
// markdown table row for bench/RESULTS.md.
//   bench_cuda RECIPE [--steps N] [--set section.key=value ...]
// Built only with nvcc; it has never run on this project's GPU-less machines.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "bench/bench_args.h"
#include "config/recipe.h"
#include "engine/cuda/backend/cuda_backend.h"
#include "engine/cuda/blas/blas.h"
#include "engine/cuda/device_buffer.h"
#include "engine/model.h"
#include "engine/rng.h"

using namespace sy;

namespace {

constexpr double kH100DenseBf16 = 989e12;

// Best of `reps` timed C = A B^T at m = n = k = size, in FLOP/s, with operands of type t.
double gemm_peak(cuda::Blas& blas, int64_t size, cuda::GemmType t, int reps) {
  const size_t bytes = t == cuda::GemmType::F32 ? 4 : 2;
  cuda::DeviceBuffer<char> a(size * size * bytes), b(size * size * bytes), c(size * size * 4);
  SY_CUDA_CHECK(cudaMemset(a.get(), 0, a.size()));
  SY_CUDA_CHECK(cudaMemset(b.get(), 0, b.size()));
  cudaEvent_t e0, e1;
  SY_CUDA_CHECK(cudaEventCreate(&e0));
  SY_CUDA_CHECK(cudaEventCreate(&e1));
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    SY_CUDA_CHECK(cudaEventRecord(e0));
    blas.gemm(false, true, size, size, size, 1.0f, a.get(), size, b.get(), size, 0.0f, c.get(), size, t,
              cuda::GemmType::F32, nullptr);
    SY_CUDA_CHECK(cudaEventRecord(e1));
    SY_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    SY_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (r > 0) best = std::max(best, 2.0 * double(size) * size * size / (ms * 1e-3));  // the first warms up
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return best;
}

HostBatch random_batch(const ModelConfig& c, int64_t b, uint64_t seed) {
  HostBatch h;
  h.batch = b, h.seq = c.seq_len;
  Philox rng(seed, 11);
  for (int64_t i = 0; i < b * c.seq_len; ++i) {
    h.inputs.push_back(int32_t(rng.below(c.vocab_size)));
    h.targets.push_back(int32_t(rng.below(c.vocab_size)));
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = bench::parse_bench_args(argc, argv, "bench_cuda", 10);
  if (!args) return 2;
  const int steps = args->steps;
  try {
    const Recipe r = load_recipe(args->recipe, args->sets);
    cudaDeviceProp prop{};
    SY_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    cuda::Blas blas;
    const double peak_bf16 = gemm_peak(blas, 8192, cuda::GemmType::BF16, 6);
    const double peak_f32 = gemm_peak(blas, 8192, cuda::GemmType::F32, 4);

    auto be = cuda::make_backend();
    size_t free0 = 0, total = 0, free_min = 0;
    SY_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    free_min = free0;
    Model model(r.model, *be, DType::F32, r.train.seed);
    const int64_t n = model.params().values().numel();
    Tensor m = be->zeros({n}, DType::F32), v = be->zeros({n}, DType::F32);
    const int64_t tokens = r.train.micro_batch * r.model.seq_len;
    double seconds = 0;
    for (int s = -2; s < steps; ++s) {  // two warm-up steps
      const HostBatch b = random_batch(r.model, r.train.micro_batch, 1000 + s);
      const auto t0 = std::chrono::steady_clock::now();
      be->fill(model.params().grads(), 0);
      model.forward_backward(b, 1.0);
      AdamWArgs a;
      a.lr = r.optim.lr, a.step = s + 3;
      be->adamw_update(model.params().values(), model.params().grads(), m, v, a);
      SY_CUDA_CHECK(cudaDeviceSynchronize());
      if (s >= 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      size_t f = 0;
      SY_CUDA_CHECK(cudaMemGetInfo(&f, &total));
      free_min = std::min(free_min, f);
    }
    const double tps = double(tokens) * steps / seconds, flops = tps * model.train_flops_per_token();
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    std::printf("| %s | %s | %s | %s | %.2fB | %lld | %.0f | %.1f%% | %.1f%% (bf16 peak %.0f TF/s; fp32 %.0f) | %.1f GiB |\n",
                date, prop.name, SY_CODE_VERSION, r.name.c_str(), double(model.params().total_numel()) / 1e9,
                (long long)tokens, tps, 100 * flops / kH100DenseBf16, 100 * flops / peak_bf16, peak_bf16 / 1e12,
                peak_f32 / 1e12, double(free0 - free_min) / (1 << 30));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
