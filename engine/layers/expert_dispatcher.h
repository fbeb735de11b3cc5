// The expert-parallel half of token dispatch: moves the permuted rows of a DispatchPlan (grouped
// by global expert, hence by owning rank, since each rank owns a contiguous run of experts) to
// the ranks that own their experts, and back.
//
//   plan     : exchange per-(rank, local expert) counts (all-to-all of integers); received rows
//              arrive grouped by source rank then by local expert.
//   dispatch : rows exchange (all-to-all-v), then (ExpertOrder::ByExpert) a local re-ordering
//              into rows grouped by local expert then by source rank (a gather).
//   combine  : the inverse re-ordering, then the reverse rows exchange.
// The layout the experts see is a list of segments, each a row range with per-local-expert
// offsets: ByExpert gives one segment (one grouped GEMM per expert over all sources, the larger
// GEMMs an accelerator wants); BySource gives one segment per source rank in the order the rows
// arrived (no re-ordering copies, and each source's rows go through the same GEMM shapes as in
// the 1-rank run, so float32 results match it to rounding of the sums alone: docs/parallel.md).
// Every phase is a permutation of rows, so each of dispatch and combine is the other's adjoint
// (and inverse): the backward pass of the layer sends output gradients with dispatch and brings
// input gradients home with combine. Only the two exchange phases communicate.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "engine/layers/token_exchange.h"

namespace sy {

enum class ExpertOrder : uint8_t { BySource, ByExpert };

class ExpertDispatcher {
 public:
  struct Segment {
    int64_t begin = 0;             // first row of the segment
    std::vector<int64_t> offsets;  // [n_local + 1], relative to begin
  };
  ExpertDispatcher(TokenExchange& ex, int64_t n_experts, int64_t first_local, int64_t n_local,
                   ExpertOrder order = ExpertOrder::BySource);

  // offsets: [E + 1] of the local plan (global experts). Collective over the EP group.
  void plan(Backend& be, const std::vector<int64_t>& offsets, DType dt, int64_t d_model);
  // Rows this rank's experts receive, and how they are grouped for the experts.
  int64_t recv_rows() const { return rows_; }
  const std::vector<Segment>& segments() const { return segments_; }
  int64_t first_local() const { return first_; }
  int64_t n_local() const { return n_local_; }

  // xp [M, D] (M = offsets[E]) -> xe [recv_rows, D]. Collective.
  void dispatch(Backend& be, const Tensor& xp, const Tensor& xe);
  // ye [recv_rows, D] -> yp [M, D] (overwritten). Collective.
  void combine(Backend& be, const Tensor& ye, const Tensor& yp);

  // Rows this rank sent to other ranks in the last plan (for communication-volume accounting).
  int64_t rows_sent_off_rank() const;
  // Rows other ranks sent to this rank's experts in the last plan.
  int64_t rows_received_off_rank() const;

 private:
  TokenExchange& ex_;
  int64_t n_experts_, first_, n_local_;
  std::vector<int64_t> send_counts_, recv_counts_;  // rows per rank
  ExpertOrder order_;
  std::vector<Segment> segments_;
  std::vector<int32_t> reorder_host_, inverse_host_;
  Tensor reorder_, inverse_;  // I32 [capacity]: expert-grouped row j <- received row reorder_[j]
  Tensor scratch_;            // [capacity, D] rows in received (rank-grouped) order
  int64_t rows_ = 0;
};

}  // namespace sy
