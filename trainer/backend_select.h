// engine.device -> a backend: the CPU reference, the CUDA backend on this rank's GPU, or the CUDA
// backend's code under the emulator.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"
#include "trainer/train_config.h"

namespace sy {

struct ChosenBackend {
  std::unique_ptr<Backend> backend;
  std::string device;  // what engine.device resolved to: cpu, cuda:N or cuda-emu
  int gpu = -1;        // cuda:N: N
};

// ConfigError (one line, with the fix) when the device cannot be had: cuda in a build without
// CUDA, or on a machine where no GPU is visible.
// bf16: the run is bfloat16 mixed precision, which only the CUDA backend computes.
ChosenBackend make_backend_for(const EngineConfig& e, int local_rank, bool bf16);

}  // namespace sy
