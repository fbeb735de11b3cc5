#include "parallel/data_parallel.h"

#include <algorithm>
#include <stdexcept>

namespace sy {

DataParallel::DataParallel(Communicator& comm, Backend& be, ParamStore& ps, int zero, int64_t bucket_elems)
    : comm_(comm), be_(be), ps_(ps), zero_(zero), bucket_elems_(std::max<int64_t>(1, bucket_elems)) {
  const int n = comm.size();
  if (ps.padded_numel() % n != 0) throw std::logic_error("flat buffers are not padded to the data-parallel size");
  shard_size_ = ps.padded_numel() / n;
  if (zero_ >= 1) {
    begin_ = std::min(ps.total_numel(), comm.rank() * shard_size_);
    end_ = std::min(ps.total_numel(), begin_ + shard_size_);
    gather_send_ = be.empty({shard_size_}, ps.values().dtype());
  } else {
    begin_ = 0;
    end_ = ps.total_numel();
  }
  if (zero_ >= 2) shard_grads_ = be.zeros({shard_size_}, ps.values().dtype());
}

OptimShard DataParallel::optimizer_shard() {
  OptimShard s;
  s.begin = begin_;
  s.end = end_;
  if (zero_ >= 2) s.grads = shard_grads_.view(0, {end_ - begin_});
  if (zero_ >= 1) {
    s.reduce_sum_squares = [this](double local) {
      comm_.all_reduce(&local, 1, CommType::F64, ReduceOp::Sum);
      return local;
    };
  }
  return s;
}

void DataParallel::reduce_gradients() {
  const Tensor& g = ps_.grads();
  const CommType t = comm_type_of(g.dtype());
  if (comm_.size() == 1) {
    if (zero_ >= 2) be_.copy(g.view(0, {shard_size_}), shard_grads_);
    return;
  }
  if (zero_ >= 2) {
    comm_.reduce_scatter(g.raw(), shard_grads_.raw(), shard_size_, t, ReduceOp::Avg);
    return;
  }
  const size_t elem = dtype_size(g.dtype());
  for (int64_t off = 0; off < g.numel(); off += bucket_elems_) {
    const int64_t n = std::min(bucket_elems_, g.numel() - off);
    comm_.all_reduce(static_cast<char*>(g.raw()) + off * elem, n, t, ReduceOp::Avg);
  }
}

void DataParallel::gather_parameters() {
  if (zero_ == 0 || comm_.size() == 1) return;
  const Tensor& v = ps_.values();
  be_.copy(v.view(comm_.rank() * shard_size_, {shard_size_}), gather_send_);
  comm_.all_gather(gather_send_.raw(), v.raw(), shard_size_, comm_type_of(v.dtype()));
}

int64_t DataParallel::reduced_gradient_bytes() const {
  return zero_ >= 2 ? int64_t(shard_grads_.nbytes()) : int64_t(ps_.grads().nbytes());
}

}  // namespace sy
