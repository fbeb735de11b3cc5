// The engine's TensorParallel over a communicator (the TP group): every region boundary goes
// through the communicator, so its byte accounting (CommStats) sees every TP transfer. Host
// doubles go over `tp`; the backend's tensors over `buffers` where it is given (on a GPU the NCCL
// communicator of the same ranks), else over `tp` too.
#pragma once

#include "engine/backend.h"
#include "engine/layers/tensor_parallel.h"
#include "parallel/comm.h"

namespace sy {

class CommTensorParallel final : public TensorParallel {
 public:
  // be: the backend the tensors belong to (bfloat16 is widened through it on a device).
  CommTensorParallel(Communicator& tp, Backend& be, Communicator* buffers = nullptr)
      : comm_(tp), buffers_(buffers ? *buffers : tp), be_(be) {}
  int size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }
  void all_reduce_sum(const Tensor& t) override;
  void all_reduce_max(const Tensor& t) override;
  void all_gather_rows(const Tensor& shard, const Tensor& full) override;
  void reduce_scatter_rows(const Tensor& full, const Tensor& shard) override;
  void all_reduce_host(std::vector<double>& v) override;

 private:
  void all_reduce(const Tensor& t, ReduceOp op);

  Communicator& comm_;
  Communicator& buffers_;
  Backend& be_;
};

}  // namespace sy
