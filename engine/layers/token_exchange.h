// The communication an expert-parallel MoE layer needs, seen from the engine: engine/ does not
// depend on parallel/, so the layer talks to this interface and the trainer plugs in an
// implementation over a communicator (parallel/token_exchange_comm.h).
//
// Both operations are all-to-all-v's over the ranks of one expert-parallel group. Rows are
// packed in rank order on both sides. The adjoint of an all-to-all-v is the all-to-all-v with
// the send and receive counts swapped, which is how the backward pass uses exchange_rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/tensor.h"

namespace sy {

class TokenExchange {
 public:
  virtual ~TokenExchange() = default;
  virtual int n_ranks() const = 0;
  virtual int rank() const = 0;
  // send[p * per_rank + i] goes to rank p; returns recv with recv[q * per_rank + i] from rank q.
  virtual std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send, int64_t per_rank) = 0;
  // All-to-all-v of [rows, D] float rows: send_counts[p] rows of send_rows go to rank p,
  // recv_counts[q] rows arrive from rank q (the counts must agree pairwise across ranks).
  virtual void exchange_rows(const Tensor& send_rows, std::span<const int64_t> send_counts, const Tensor& recv_rows,
                             std::span<const int64_t> recv_counts) = 0;
};

}  // namespace sy
