// Training-loop settings: the recipe's [train] section.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

struct TrainConfig {
  int64_t steps = 1000;
  uint64_t seed = 1234;
  int64_t micro_batch = 8;   // sequences per micro-batch
  int64_t grad_accum = 1;    // micro-batches per optimizer step
  int64_t log_every = 10;
  int64_t eval_every = 100;  // 0: only at the end
  int64_t eval_batches = 16; // validation micro-batches per evaluation, read in order
  double max_minutes = 0;    // 0: no time budget
  int64_t stop_at_step = 0;  // 0: off; else stop cleanly (with a checkpoint) after this step
  // A step whose loss or gradient norm is not finite is skipped (no update, on every rank); this
  // many in a row roll back to the last checkpoint and skip their data (trainer/step_guard.h).
  int64_t max_bad_steps = 3;
  std::string out_dir;       // default runs/<recipe name>
  std::string save_weights;  // HDF5 path for the final weights; empty: none
  // A weights file (e.g. from `switchyard import --from-hf`) the parameters start from instead of
  // the random initialisation, at any layout; ignored when the run resumes from a checkpoint.
  std::string init_weights;
  double peak_gflops = 530;  // the machine's measured fp32 GEMM peak (bench/gemm_peak), for MFU
  std::string dtype = "float32";  // float32 | float64
};

// Where the engine runs: the recipe's [engine] section.
struct EngineConfig {
  // cpu: the CPU reference backend. cuda: the CUDA backend on this rank's GPU (local rank).
  // cuda-emu: the CUDA backend's code on the host, under the CUDA emulator (engine/cuda/emu/):
  // slow, for checking the GPU path end to end where no GPU is. auto: cuda when a GPU is
  // visible and the build has CUDA, else cpu.
  std::string device = "cpu";
};

}  // namespace sy
