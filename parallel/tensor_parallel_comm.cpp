#include "parallel/tensor_parallel_comm.h"

#include <stdexcept>

namespace sy {

namespace {
CommType type_of(const Tensor& t) { return t.dtype() == DType::I32 ? CommType::I32 : comm_type_of(t.dtype()); }
}  // namespace

// Host memory only, like CommTokenExchange: a device backend pairs with a device communicator.
void CommTensorParallel::all_reduce_sum(const Tensor& t) {
  comm_.all_reduce(t.raw(), t.numel(), type_of(t), ReduceOp::Sum);
}

void CommTensorParallel::all_reduce_max(const Tensor& t) {
  comm_.all_reduce(t.raw(), t.numel(), type_of(t), ReduceOp::Max);
}

void CommTensorParallel::all_gather_rows(const Tensor& shard, const Tensor& full) {
  if (full.numel() != shard.numel() * comm_.size()) throw std::invalid_argument("all_gather_rows: sizes");
  comm_.all_gather(shard.raw(), full.raw(), shard.numel(), type_of(shard));
}

void CommTensorParallel::reduce_scatter_rows(const Tensor& full, const Tensor& shard) {
  if (full.numel() != shard.numel() * comm_.size()) throw std::invalid_argument("reduce_scatter_rows: sizes");
  comm_.reduce_scatter(full.raw(), shard.raw(), shard.numel(), type_of(shard), ReduceOp::Sum);
}

void CommTensorParallel::all_reduce_host(std::vector<double>& v) {
  comm_.all_reduce(v.data(), int64_t(v.size()), CommType::F64, ReduceOp::Sum);
}

}  // namespace sy
