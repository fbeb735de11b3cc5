#include "parallel/tensor_parallel_comm.h"

#include <stdexcept>
#include <vector>

namespace sy {

namespace {
CommType type_of(const Tensor& t) { return t.dtype() == DType::I32 ? CommType::I32 : comm_type_of(t.dtype()); }

// bfloat16 moves as its bits but is never reduced as them: the values go through float32, are
// reduced there (each rank's partial sum added in float32, rounded once at the end, where a
// bfloat16 reduction would round at every step) and come back rounded to nearest even.
std::vector<float> widen(const Tensor& t) {
  std::vector<float> f(size_t(t.numel()));
  const bfloat16* b = t.data<bfloat16>();
  for (size_t i = 0; i < f.size(); ++i) f[i] = bf16_to_float(b[i]);
  return f;
}
void narrow(const std::vector<float>& f, const Tensor& t) {
  bfloat16* b = t.data<bfloat16>();
  for (size_t i = 0; i < f.size(); ++i) b[i] = float_to_bf16(f[i]);
}
}  // namespace

// Host memory only, like CommTokenExchange: a device backend pairs with a device communicator.
void CommTensorParallel::all_reduce_sum(const Tensor& t) {
  if (t.dtype() == DType::BF16) {
    std::vector<float> f = widen(t);
    comm_.all_reduce(f.data(), t.numel(), CommType::F32, ReduceOp::Sum);
    return narrow(f, t);
  }
  comm_.all_reduce(t.raw(), t.numel(), type_of(t), ReduceOp::Sum);
}

void CommTensorParallel::all_reduce_max(const Tensor& t) {
  if (t.dtype() == DType::BF16) {
    std::vector<float> f = widen(t);
    comm_.all_reduce(f.data(), t.numel(), CommType::F32, ReduceOp::Max);
    return narrow(f, t);
  }
  comm_.all_reduce(t.raw(), t.numel(), type_of(t), ReduceOp::Max);
}

void CommTensorParallel::all_gather_rows(const Tensor& shard, const Tensor& full) {
  if (full.numel() != shard.numel() * comm_.size()) throw std::invalid_argument("all_gather_rows: sizes");
  comm_.all_gather(shard.raw(), full.raw(), shard.numel(), type_of(shard));
}

void CommTensorParallel::reduce_scatter_rows(const Tensor& full, const Tensor& shard) {
  if (full.numel() != shard.numel() * comm_.size()) throw std::invalid_argument("reduce_scatter_rows: sizes");
  if (full.dtype() == DType::BF16) {
    const std::vector<float> f = widen(full);
    std::vector<float> mine(size_t(shard.numel()));
    comm_.reduce_scatter(f.data(), mine.data(), shard.numel(), CommType::F32, ReduceOp::Sum);
    return narrow(mine, shard);
  }
  comm_.reduce_scatter(full.raw(), shard.raw(), shard.numel(), type_of(shard), ReduceOp::Sum);
}

void CommTensorParallel::all_reduce_host(std::vector<double>& v) {
  comm_.all_reduce(v.data(), int64_t(v.size()), CommType::F64, ReduceOp::Sum);
}

}  // namespace sy
