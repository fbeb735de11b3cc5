// The communicators the backend's buffers (gradients, token rows, tensor-parallel activations)
// move over, beside RunContext's host ones, which keep carrying host scalars (losses, counts,
// stop flags, the gradient norm's sums). parallel.comm chooses: mpi (the host groups carry the
// buffers too: host memory, the CPU backend and the emulator), nccl (an NCCL communicator per
// group of more than one rank, bootstrapped over its host group, ordered after the backend's
// stream; under cuda-emu the emulated NCCL), auto (nccl for a GPU job of several ranks, else mpi).
#pragma once

#include <memory>
#include <string>

#include "config/recipe.h"
#include "parallel/comm.h"
#include "trainer/backend_select.h"
#include "trainer/run_context.h"

namespace sy {

struct BufferComms {
  std::string kind = "mpi";  // what parallel.comm resolved to: mpi or nccl
  // nccl: a group's NCCL communicator (null for a group of one rank); mpi: all null.
  std::unique_ptr<Communicator> dp, tp, ep, edp, etp;
};

// parallel.comm against the device and the layout; ConfigError naming the key and the fix when
// they do not go together (nccl on the CPU backend or with pipeline stages, mpi for GPU buffers,
// nccl in a build without it).
std::string resolve_comm(const Recipe& r, const std::string& device, int world);

// Collective over every rank (each group's members create its communicator, in the same order on
// every rank, as RunContext's subgroups are made).
BufferComms make_buffer_comms(const Recipe& r, RunContext& ctx, const ChosenBackend& chosen);

}  // namespace sy
