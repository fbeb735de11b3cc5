// Expert tensor parallelism (parallel.etp, Megatron-Core style): the etp ranks of an ETP group hold
// the same routed experts, and rank s of the group holds rows [s F/etp, (s+1) F/etp) of each
// expert's w1 and w3 (gate and up, column-parallel) and the same rows of w2 (down, stored
// [in, out], so row-parallel). The fused gate|up operand is then [2F/etp, D] and the grouped
// SwiGLU runs on it unchanged.
//
// Every slice of an expert must see the same token rows, but each rank arrives with its own rows
// (its routed rows, or what the EP exchange brought it). So the rows are gathered over the group
// before the experts, and the down projection's partial outputs are summed over the group and
// scattered back to the rank that owns each row after. The two are each other's adjoint:
//
//              forward                              backward
//   entry      gather (all-gather-v of rows)        reduce_scatter (input-gradient partial sums)
//   exit       reduce_scatter (sum of partials)     gather (every row's output gradient)
//
// Both run over a TokenExchange on the ETP group (all-to-all-v), so uneven row counts cost
// exactly their rows and nothing is padded. engine/ stays free of parallel/: the trainer plugs in
// the exchange (parallel/token_exchange_comm.h over the `etp` communicator).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "engine/layers/expert_dispatcher.h"
#include "engine/layers/token_exchange.h"

namespace sy {

class ExpertTpRegion {
 public:
  using Segment = ExpertDispatcher::Segment;
  explicit ExpertTpRegion(TokenExchange& ex) : ex_(ex) {}
  int size() const { return ex_.n_ranks(); }
  int rank() const { return ex_.rank(); }

  // mine: this rank's rows as consecutive segments tiling [0, rows), each with per-expert offsets
  // (the same number of segments and experts on every rank of the group). Collective: exchanges
  // the per-segment counts; afterwards segments() describes the gathered rows, every rank's
  // block in rank order, each block laid out as that rank's segments.
  void plan(Backend& be, const std::vector<Segment>& mine, int64_t rows, DType dt, int64_t d_model);
  int64_t rows() const { return total_; }        // gathered rows of the whole group
  int64_t own_rows() const { return counts_.empty() ? 0 : counts_[rank()]; }
  const std::vector<Segment>& segments() const { return segments_; }

  // mine [own_rows, D] -> all [rows, D]: every rank's rows, in rank order. Collective.
  void gather(Backend& be, const Tensor& mine, const Tensor& all);
  // all [rows, D] partial sums on every rank -> mine [own_rows, D] (overwritten): the sum over the
  // group of this rank's block, added in rank order (the same order on every rank). Collective.
  void reduce_scatter(Backend& be, const Tensor& all, const Tensor& mine);

 private:
  TokenExchange& ex_;
  std::vector<int64_t> counts_;  // rows per rank of the group
  std::vector<int64_t> own_;     // own_rows() once per rank: the exchanges' counts on this side
  std::vector<Segment> segments_;
  int64_t total_ = 0;
  Tensor copies_;  // [size * own_rows, D]: this rank's rows once per peer (gather's send,
                   // reduce_scatter's receive)
};

}  // namespace sy
