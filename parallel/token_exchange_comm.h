// The engine's TokenExchange over a communicator (the expert-parallel group): counts and rows
// go through all_to_all_v, so the communicator's byte accounting sees every exchanged row. The
// counts are host integers; the rows are the backend's tensors, which move over `rows` where it
// is given (on a GPU the NCCL communicator of the same ranks), else over the same communicator.
#pragma once

#include "engine/layers/token_exchange.h"
#include "parallel/comm.h"

namespace sy {

class CommTokenExchange final : public TokenExchange {
 public:
  explicit CommTokenExchange(Communicator& ep, Communicator* rows = nullptr) : comm_(ep), rows_(rows ? *rows : ep) {}
  int n_ranks() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send, int64_t per_rank) override;
  void exchange_rows(const Tensor& send_rows, std::span<const int64_t> send_counts, const Tensor& recv_rows,
                     std::span<const int64_t> recv_counts) override;
  // Wall time spent inside the exchanges since the last reset (waiting for peers included).
  double seconds() const { return seconds_; }
  void reset_seconds() { seconds_ = 0; }

 private:
  Communicator& comm_;
  Communicator& rows_;
  double seconds_ = 0;
};

}  // namespace sy
