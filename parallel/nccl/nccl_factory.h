// How code outside parallel/nccl/ makes an NCCL communicator, in plain C++ (no CUDA or emulator
// headers), as engine/cuda/backend/backend_factory.h does for the backend: the nvcc build
// (sy_parallel_nccl) defines make_device_nccl_comm, the emulator build (sy_parallel_nccl_emu)
// make_emulated_nccl_comm, so a program can link either or both and choose at run time.
#pragma once

#include <memory>

#include "parallel/comm.h"

namespace sy::nccl {

// The NCCL communicator over the ranks of `bootstrap` (collective over them; comm_nccl.h) on GPU
// `gpu`, ordered after `compute_stream` (a cudaStream_t: the backend's native_stream()).
std::unique_ptr<Communicator> make_device_nccl_comm(Communicator& bootstrap, int gpu, void* compute_stream);
// The same under the emulator: its emulated NCCL moves the data over `bootstrap`'s ranks.
std::unique_ptr<Communicator> make_emulated_nccl_comm(Communicator& bootstrap, void* compute_stream);

}  // namespace sy::nccl
