// Data parallelism over one communicator: gradient averaging in buckets, and ZeRO sharding of
// the optimizer (stage 1) and of the reduced gradients (stage 2) over the flat buffers.
//
// The flat buffers are padded to a multiple of the group size and cut into equal shards; rank r
// owns [r * S, (r + 1) * S). Per step:
//   zero 0: all-reduce (average) every bucket of the gradient buffer; every rank updates all.
//   zero 1: the same all-reduce; each rank updates its shard; parameters are all-gathered.
//   zero 2: reduce-scatter (average) the gradient buffer into a shard-sized buffer, so the
//           reduced gradients a rank keeps are 1/dp of the total; update; all-gather.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/params.h"
#include "optim/optimizer.h"
#include "parallel/comm.h"

namespace sy {

class DataParallel {
 public:
  DataParallel(Communicator& comm, Backend& be, ParamStore& ps, int zero, int64_t bucket_elems);

  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  // The optimizer's view: its shard, where the reduced gradients live, and the norm reduction.
  OptimShard optimizer_shard();
  // Averages the gradients over the group (after the last micro-batch's backward).
  void reduce_gradients();
  // Brings every rank's parameters up to date after the sharded update (no-op for zero 0).
  void gather_parameters();
  // Expert parallelism: each MoE layer's experts (one contiguous run of expert
  // parameters in the flat buffer) are split evenly over `ep`, this rank owning block ep.rank().
  // Gradients: dense ranges average over the DP group as before; the owned expert block is summed
  // over `edp` and divided by the DP size (docs/parallel.md derives it); non-owned expert blocks
  // are left alone (zero). The gradient norm adds the other EP ranks' expert blocks. After the
  // update, gather_parameters all-gathers every run over `ep`, so every rank again holds the
  // same full parameters as a 1-rank run. Call before optimizer_shard().
  void set_expert_parallel(Communicator& ep, Communicator& edp);
  // Which rank's optimizer state is authoritative for the flat element `offset`: true for dense
  // parameters on every rank; for expert parameters only on the EP rank owning that expert.
  bool owns_optimizer_state(int64_t offset) const;
  // Bytes of reduced gradients this rank keeps for the optimizer (1/dp of the total at zero 2).
  int64_t reduced_gradient_bytes() const;

 private:
  Communicator& comm_;
  Backend& be_;
  ParamStore& ps_;
  int zero_;
  int64_t bucket_elems_;
  int64_t shard_size_ = 0, begin_ = 0, end_ = 0;
  Tensor shard_grads_;   // zero 2: the reduce-scatter destination
  Tensor gather_send_;   // zero >= 1: this rank's shard, copied out so send and receive do not alias
  Communicator* ep_ = nullptr;
  Communicator* edp_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> expert_runs_;  // [begin, end) of each layer's experts
  Tensor ep_send_;       // this rank's expert block of one run, copied out for the all-gather
  int64_t owned_begin(const std::pair<int64_t, int64_t>& run) const;
  // Every EP rank's owned expert blocks of `flat` (values or gradients) to every EP rank.
  void all_gather_expert_blocks(const Tensor& flat);
  int64_t block_of(const std::pair<int64_t, int64_t>& run) const;
};

}  // namespace sy
