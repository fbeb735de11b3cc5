// NCCL for the two builds of parallel/nccl/*.cu, as engine/cuda/cuda_compat.h does for the CUDA
// runtime: <nccl.h> under nvcc (and in host files of the device build), the host emulator
// (engine/cuda/emu/emu_nccl.h, over a registered transport) under g++.
#pragma once

#include "engine/cuda/cuda_compat.h"

#if SY_CUDA_EMULATED
#include "engine/cuda/emu/emu_nccl.h"
#else
#include <nccl.h>
#endif
