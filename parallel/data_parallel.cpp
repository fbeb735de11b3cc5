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

void DataParallel::set_expert_parallel(Communicator& ep, Communicator& edp) {
  ep_ = &ep;
  edp_ = &edp;
  expert_runs_.clear();
  for (const ParamInfo& p : ps_.infos()) {
    if (!p.expert) continue;
    if (!expert_runs_.empty() && expert_runs_.back().second == p.offset) expert_runs_.back().second += p.numel;
    else expert_runs_.emplace_back(p.offset, p.offset + p.numel);
  }
  int64_t biggest = 1;
  for (const auto& run : expert_runs_) {
    if ((run.second - run.first) % ep.size() != 0) throw std::logic_error("expert run does not split over ep");
    biggest = std::max(biggest, block_of(run));
  }
  ep_send_ = be_.empty({biggest}, ps_.values().dtype());
}

bool DataParallel::owns_optimizer_state(int64_t offset) const {
  if (!ep_) return true;
  for (const auto& run : expert_runs_)
    if (offset >= run.first && offset < run.second) {
      const int64_t lo = owned_begin(run);
      return offset >= lo && offset < lo + block_of(run);
    }
  return true;
}

int64_t DataParallel::block_of(const std::pair<int64_t, int64_t>& run) const {
  return (run.second - run.first) / ep_->size();
}
int64_t DataParallel::owned_begin(const std::pair<int64_t, int64_t>& run) const {
  return run.first + ep_->rank() * block_of(run);
}

OptimShard DataParallel::optimizer_shard() {
  OptimShard s;
  if (ep_ && ep_->size() > 1) {
    // Non-owned expert gradients are zero here, so the local sum of squares is dense + owned
    // experts; adding the other EP ranks' owned blocks makes it the 1-rank global one.
    s.reduce_sum_squares = [this](double local) {
      double mine = 0;
      for (const auto& run : expert_runs_) mine += be_.sum_squares(ps_.grads().view(owned_begin(run), {block_of(run)}));
      double all = mine;
      ep_->all_reduce(&all, 1, CommType::F64, ReduceOp::Sum);
      return local + (all - mine);
    };
  }
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
  if (zero_ >= 2 && !ep_) {
    comm_.reduce_scatter(g.raw(), shard_grads_.raw(), shard_size_, t, ReduceOp::Avg);
    return;
  }
  const size_t elem = dtype_size(g.dtype());
  auto average = [&](int64_t begin, int64_t end) {
    for (int64_t off = begin; off < end; off += bucket_elems_) {
      const int64_t n = std::min(bucket_elems_, end - off);
      comm_.all_reduce(static_cast<char*>(g.raw()) + off * elem, n, t, ReduceOp::Avg);
    }
  };
  if (!ep_) {
    average(0, g.numel());
    return;
  }
  // Dense ranges (between the expert runs) as before. An owned expert block already holds the
  // contributions of every EP rank's tokens; its EDP peers hold the rest, so their sum over the
  // DP size is the mean over all micro-batches, as in the 1-rank run.
  int64_t pos = 0;
  for (const auto& run : expert_runs_) {
    average(pos, run.first);
    pos = run.second;
  }
  average(pos, g.numel());
  for (const auto& run : expert_runs_) {
    const Tensor mine = g.view(owned_begin(run), {block_of(run)});
    if (edp_->size() > 1) edp_->all_reduce(mine.raw(), mine.numel(), t, ReduceOp::Sum);
    be_.scale(mine, 1.0 / double(comm_.size()));
  }
  if (zero_ == 0) return;
  // ZeRO with EP: a rank's optimizer shard cuts across experts it does not own, so every rank
  // first gets every expert's reduced gradient (all-gathered over EP from the owners); the
  // shards then update as in plain data parallelism. (This keeps the optimizer state at 1/dp;
  // sharding the expert gradients and storage by owner is the memory-optimal next step.)
  all_gather_expert_blocks(g);
  if (zero_ >= 2) be_.copy(g.view(comm_.rank() * shard_size_, {shard_size_}), shard_grads_);
}

void DataParallel::all_gather_expert_blocks(const Tensor& flat) {
  if (ep_->size() == 1) return;
  for (const auto& run : expert_runs_) {
    const int64_t b = block_of(run);
    be_.copy(flat.view(owned_begin(run), {b}), ep_send_.view(0, {b}));
    ep_->all_gather(ep_send_.raw(), flat.view(run.first, {run.second - run.first}).raw(), b, comm_type_of(flat.dtype()));
  }
}

void DataParallel::gather_parameters() {
  // zero 0 with EP: owners updated their experts; every other rank's copy is stale until this
  // all-gather. (Under ZeRO the shards' all-gather below brings every parameter up to date.)
  if (ep_ && zero_ == 0) all_gather_expert_blocks(ps_.values());
  if (zero_ == 0 || comm_.size() == 1) return;
  const Tensor& v = ps_.values();
  be_.copy(v.view(comm_.rank() * shard_size_, {shard_size_}), gather_send_);
  comm_.all_gather(gather_send_.raw(), v.raw(), shard_size_, comm_type_of(v.dtype()));
}

int64_t DataParallel::reduced_gradient_bytes() const {
  return zero_ >= 2 ? int64_t(shard_grads_.nbytes()) : int64_t(ps_.grads().nbytes());
}

}  // namespace sy
