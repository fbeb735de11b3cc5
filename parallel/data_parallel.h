// Data parallelism, with expert parallelism beside it: gradient reduction in buckets and ZeRO
// sharding of the optimizer (stage 1) and of the reduced gradients (stage 2).
//
// The flat buffers have three segments (engine/params.h), each reduced and sharded over its own
// group:
//   replicated: the same on every TP rank; averaged over DP. Parameters whose gradients are
//               partial over TP (norms under sequence parallelism, the router) are first summed
//               over TP.
//   tp rows   : each TP rank's block; averaged over DP.
//   experts   : each rank holds its EP rank's experts (under expert tensor parallelism, its ETP
//               rank's slice of each); the ranks holding the same slices of the same experts form
//               the EDP group. Their gradients already hold every token routed to them from the
//               rank's EP peers (and TP or ETP peers), so they are summed over EDP and divided by
//               the DP size: the mean over all micro-batches, as in the 1-rank run (docs/parallel.md).
// Each segment is padded to a multiple of its group's size and cut into equal shards; rank r of
// the group owns [r * S, (r + 1) * S) of it. Per step and segment:
//   zero 0: all-reduce every bucket; every rank updates the whole segment.
//   zero 1: the same all-reduce; each rank updates its shard; the shards are all-gathered.
//   zero 2: reduce-scatter into a shard-sized buffer, so the reduced gradients a rank keeps are
//           1/group of the segment; update; all-gather.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "engine/params.h"
#include "optim/optimizer.h"
#include "parallel/comm.h"

namespace sy {

// The groups a rank's parameters reduce over. Without expert parallelism ep has size 1; without
// tensor parallelism tp has size 1; without expert tensor parallelism etp has size 1 (and may be
// left null). `all` is every rank holding a part of the model (tp x dp x pp, which is also
// etp x ep x edp x pp); pp (null or size 1 without pipeline stages) the ranks of the other stages.
struct DataParallelGroups {
  Communicator* dp = nullptr;
  Communicator* tp = nullptr;
  Communicator* ep = nullptr;
  Communicator* edp = nullptr;
  Communicator* all = nullptr;
  Communicator* etp = nullptr;
  Communicator* pp = nullptr;  // the pipeline group: the gradient norm sums over its stages
  // The communicators the gradient and parameter buffers move over, where they are not the groups
  // above: on a GPU the NCCL communicators of the same ranks, while host scalars (the gradient
  // norm's sums) stay on the groups above. Null: the groups above carry both.
  Communicator* dp_buffers = nullptr;
  Communicator* tp_buffers = nullptr;
  Communicator* edp_buffers = nullptr;
};

// Overlap (zero 0 and 1): armed before the last micro-batch's backward, it hears from the model
// as each layer's gradients complete (engine/model.h, GradientListener) and starts the all-reduce
// of every bucket whose parameters are all complete, so that on the NCCL communicator the
// reduction of layer i runs on the communication stream during the backward of layer i - 1.
// reduce_gradients() then starts the buckets no backward completed and waits for all of them.
// The buckets are the same ranges, reduced by the same operation, as without overlap, so the
// result is the same to the bit; only the order in which they start differs (the same on every
// rank of a group, since every rank runs the same backward).
class DataParallel final : public GradientListener {
 public:
  DataParallel(DataParallelGroups groups, Backend& be, ParamStore& ps, int zero, int64_t bucket_elems,
               bool overlap = false);

  // The optimizer's view: its pieces (one per segment, in segment order, possibly empty), where
  // their reduced gradients live, and the global gradient-norm reduction.
  OptimShard optimizer_shard();
  // Overlap: the next backward's completed gradients start their buckets' reduction (call it
  // before the last micro-batch's backward; a no-op without overlap or at zero 2).
  void arm();
  void gradients_ready(std::span<const int> param_ids) override;
  // Reduces the gradients (after the last micro-batch's backward), waiting for those the
  // backward started.
  void reduce_gradients();
  // Brings every rank's parameters up to date after the sharded update (no-op for zero 0).
  void gather_parameters();
  // Overlap: the all-reduced buckets, and how many of them the last armed backward started
  // (the rest reduce_gradients() did). 0 and 0 without overlap.
  int64_t buckets() const { return int64_t(buckets_.size()); }
  int64_t buckets_started_in_backward() const { return in_backward_; }
  // Bytes of reduced gradients this rank keeps for the optimizer (1/group of each segment at zero 2).
  int64_t reduced_gradient_bytes() const;
  // Whether this rank writes the checkpoint's copy of parameter p (the first rank of the group it
  // is replicated over) and of its optimizer moments (under ZeRO every rank its shards, except
  // that replicated parameters' shards come from TP rank 0 only).
  bool writes_value(const ParamInfo& p) const;
  bool writes_moments(const ParamInfo& p) const;

 private:
  struct Segment {
    Communicator* comm = nullptr;
    ParamSegment range;
    int64_t shard_size = 0, shard_begin = 0, shard_end = 0;  // flat-buffer elements
    bool sum = false;       // Sum then post_scale (experts), else Avg
    double post_scale = 1;  // experts: 1 / DP size
    Tensor shard_grads;     // zero 2: the reduce-scatter destination
    Tensor gather_send;     // zero >= 1: this rank's shard, copied out so send and receive do not alias
  };
  // A run of one all-reduced segment's flat gradients, reduced as one operation.
  struct Bucket {
    int seg = 0;
    int64_t begin = 0, n = 0;  // flat-buffer elements
    int waiting = 0;           // armed: parameters in it whose gradients are not complete yet
    bool started = false;
  };
  void setup(Segment& s, Communicator& comm, const ParamSegment& range, double post_scale);
  void setup_buckets();
  // The segment's communication (unless its buckets did it), then the experts' 1/DP scale.
  void reduce(Segment& s, bool communicated);
  void start(Bucket& b);
  void sum_partial(int id);  // its TP peers' partial gradients, summed (before its bucket starts)

  DataParallelGroups g_;
  Backend& be_;
  ParamStore& ps_;
  int zero_;
  int64_t bucket_elems_;
  bool overlap_;
  Segment seg_[3];  // by SegmentKind
  std::vector<int> partial_;  // parameters whose gradients are summed over TP first
  Communicator* tp_buffers_ = nullptr;
  // Overlap's state: every all-reduced segment's buckets, each parameter's buckets, and what the
  // armed backward has started (requests finished in reduce_gradients, in starting order).
  std::vector<Bucket> buckets_;
  std::vector<std::vector<int>> param_buckets_;
  std::vector<char> ready_;  // armed: parameters whose gradients the backward completed
  bool armed_ = false;
  int64_t in_backward_ = 0;
  std::vector<std::pair<Communicator*, CommRequest>> started_;
};

}  // namespace sy
