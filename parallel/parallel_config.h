// The recipe's [parallel] section: the sizes of the process grid and the data-parallel options.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct ParallelConfig {
  int64_t tp = 1, cp = 1, pp = 1, ep = 1, etp = 1;
  int64_t vpp = 1;                 // virtual pipeline stages per rank (interleaved 1F1B when > 1)
  std::vector<int64_t> pp_layers;  // layers per pipeline chunk (pp * vpp of them); empty: balanced
  int64_t dp = 0;                  // 0: derived from the world size
  int64_t zero = 0;                // 0: replicated optimizer; 1: sharded optimizer state; 2: + sharded gradients
  bool sp = false;                 // sequence parallelism over the TP group (needs tp > 1 to matter)
  std::string order = "tp-cp-dp-pp";
  double timeout_s = 600;          // a collective that takes longer fails on every surviving rank
  double bucket_mb = 25;           // gradient all-reduce bucket size
  // What the backend's buffers (gradients, token rows, TP activations) move over: mpi (host
  // memory: the CPU backend, the emulator), nccl (device memory: a GPU per rank; under cuda-emu
  // the emulated NCCL), auto (nccl on GPUs, else mpi). Host scalars always go over MPI.
  std::string comm = "auto";
  // Start each gradient bucket's reduction as soon as the last micro-batch's backward has
  // completed it (zero 0 and 1, no pipeline stages); else after the backward. The same result.
  bool overlap_grad_reduce = true;
};

}  // namespace sy
