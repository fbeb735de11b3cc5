// The engine's TensorParallel over a communicator (the TP group): every region boundary goes
// through the communicator, so its byte accounting (CommStats) sees every TP transfer.
#pragma once

#include "engine/layers/tensor_parallel.h"
#include "parallel/comm.h"

namespace sy {

class CommTensorParallel final : public TensorParallel {
 public:
  explicit CommTensorParallel(Communicator& tp) : comm_(tp) {}
  int size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }
  void all_reduce_sum(const Tensor& t) override;
  void all_reduce_max(const Tensor& t) override;
  void all_gather_rows(const Tensor& shard, const Tensor& full) override;
  void reduce_scatter_rows(const Tensor& full, const Tensor& shard) override;
  void all_reduce_host(std::vector<double>& v) override;

 private:
  Communicator& comm_;
};

}  // namespace sy
