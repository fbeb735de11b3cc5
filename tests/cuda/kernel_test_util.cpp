// The kernel tests' fixture: the emulator's shuffled schedule (no-op in the GPU build).
#include "tests/cuda/kernel_test_util.h"

#if SY_CUDA_EMULATED
#include "engine/cuda/emu/cuda_emu.h"
#endif

namespace sy::cuda::test {

void KernelTest::SetUp() {
#if SY_CUDA_EMULATED
  syemu::set_schedule(syemu::Schedule::Shuffled, 20240611);
#endif
}

void KernelTest::TearDown() {
#if SY_CUDA_EMULATED
  syemu::set_schedule(syemu::Schedule::InOrder);
#endif
}

}  // namespace sy::cuda::test
