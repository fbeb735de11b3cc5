#include "trainer/backend_select.h"

#include "engine/config_error.h"
#include "engine/cuda/backend/backend_factory.h"

namespace sy {

namespace {
// SY_HAVE_CUDA_DEVICE: this binary links the nvcc build (sy_cuda); set by cmake/cuda.cmake.
#if SY_HAVE_CUDA_DEVICE
int visible_gpus(std::string* why) { return cuda::cuda_device_count(why); }
#else
int visible_gpus(std::string* why) {
  *why = "this build has no CUDA (nvcc was not found when it was configured)";
  return 0;
}
#endif
}  // namespace

ChosenBackend make_backend_for(const EngineConfig& e, int local_rank, bool bf16) {
  if (e.device == "cpu") return {make_cpu_backend(), "cpu"};
  if (e.device == "cuda-emu") {
    cuda::set_emulated_grid_stride_blocks(0);  // a training run: launch shapes for speed on the host
    return {cuda::make_emulated_backend(), "cuda-emu"};
  }
  std::string why;
  const int gpus = visible_gpus(&why);
  if (gpus == 0) {
    if (e.device == "auto") {
      if (bf16) throw ConfigError("engine.device=\"auto\" found no GPU (" + why + ") and the CPU backend has no bfloat16; "
                                  "set train.dtype=\"float32\" or engine.device=\"cuda-emu\"");
      return {make_cpu_backend(), "cpu"};
    }
    throw ConfigError("engine.device=\"cuda\" but " + why + "; set engine.device=\"cpu\" (or \"auto\")");
  }
  // One GPU per rank: the rank's place on its node picks it (modulo, so that CUDA_VISIBLE_DEVICES
  // narrowed to one GPU per rank also works).
  const int dev = local_rank % gpus;
#if SY_HAVE_CUDA_DEVICE
  return {cuda::make_cuda_backend(dev), "cuda:" + std::to_string(dev), dev};
#else
  (void)dev;
  throw ConfigError("engine.device=\"cuda\": this build has no CUDA; set engine.device=\"cpu\"");
#endif
}

}  // namespace sy
