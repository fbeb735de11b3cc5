#include "parallel/data_parallel.h"

#include <algorithm>
#include <stdexcept>

namespace sy {

DataParallel::DataParallel(DataParallelGroups groups, Backend& be, ParamStore& ps, int zero, int64_t bucket_elems)
    : g_(groups), be_(be), ps_(ps), zero_(zero), bucket_elems_(std::max<int64_t>(1, bucket_elems)) {
  if (!g_.dp || !g_.ep || !g_.edp) throw std::logic_error("DataParallel needs its dp, ep and edp groups");
  // The DP group is the EP group times the EDP group (no tensor, context or pipeline split yet).
  if (g_.dp->size() != g_.ep->size() * g_.edp->size())
    throw std::logic_error("dp size is not ep size times edp size");
  setup(dense_, *g_.dp, ps.dense_segment(), 1.0);
  setup(experts_, *g_.edp, ps.expert_segment(), 1.0 / double(g_.dp->size()));
}

void DataParallel::setup(Segment& s, Communicator& comm, const ParamSegment& range, double post_scale) {
  const int n = comm.size();
  if (range.padded % n != 0) throw std::logic_error("a flat-buffer segment is not padded to its group's size");
  s.comm = &comm;
  s.range = range;
  s.post_scale = post_scale;
  s.shard_size = range.padded / n;
  const int64_t end = range.begin + range.numel;
  if (zero_ >= 1) {
    s.shard_begin = std::min(end, range.begin + comm.rank() * s.shard_size);
    s.shard_end = std::min(end, s.shard_begin + s.shard_size);
    s.gather_send = be_.empty({std::max<int64_t>(1, s.shard_size)}, ps_.values().dtype());
  } else {
    s.shard_begin = range.begin;
    s.shard_end = end;
  }
  if (zero_ >= 2) s.shard_grads = be_.zeros({std::max<int64_t>(1, s.shard_size)}, ps_.values().dtype());
}

OptimShard DataParallel::optimizer_shard() {
  OptimShard s;
  for (Segment* seg : {&dense_, &experts_}) {
    if (seg->range.numel == 0) continue;
    OptimPiece p{seg->shard_begin, seg->shard_end, Tensor()};
    if (zero_ >= 2) p.grads = seg->shard_grads.view(0, {seg->shard_end - seg->shard_begin});
    s.pieces.push_back(p);
  }
  const bool has_experts = experts_.range.numel > 0;
  s.reduce_sum_squares = [this, has_experts](const std::vector<double>& local) {
    const double dense = local.at(0), expert = has_experts ? local.at(1) : 0.0;
    if (zero_ >= 1) {
      // Dense shards partition the dense segment over DP; expert shards partition each EP rank's
      // experts over EDP, and DP = EP x EDP: one sum over DP counts every element once.
      double all = dense + expert;
      g_.dp->all_reduce(&all, 1, CommType::F64, ReduceOp::Sum);
      return all;
    }
    // Every rank holds all dense gradients; the EP ranks hold different experts.
    double e = expert;
    if (has_experts && g_.ep->size() > 1) g_.ep->all_reduce(&e, 1, CommType::F64, ReduceOp::Sum);
    return dense + e;
  };
  return s;
}

void DataParallel::reduce(Segment& s) {
  if (s.range.padded == 0) return;
  const Tensor g = ps_.grads().view(s.range.begin, {s.range.padded});
  const CommType t = comm_type_of(g.dtype());
  // Averaging is exact as a Sum followed by the segment's own scale (1/DP); for the dense segment
  // the group is the DP group, so Avg says the same in one pass.
  const ReduceOp op = s.post_scale == 1.0 ? ReduceOp::Avg : ReduceOp::Sum;
  Tensor reduced = g;
  if (zero_ >= 2) {
    reduced = s.shard_grads.view(0, {s.shard_size});
    if (s.comm->size() == 1) be_.copy(g.view(0, {s.shard_size}), reduced);
    else s.comm->reduce_scatter(g.raw(), reduced.raw(), s.shard_size, t, op);
  } else if (s.comm->size() > 1) {
    const size_t elem = dtype_size(g.dtype());
    for (int64_t off = 0; off < g.numel(); off += bucket_elems_) {
      const int64_t n = std::min(bucket_elems_, g.numel() - off);
      s.comm->all_reduce(static_cast<char*>(g.raw()) + off * elem, n, t, op);
    }
  }
  if (s.post_scale != 1.0) be_.scale(reduced, s.post_scale);
}

void DataParallel::reduce_gradients() {
  reduce(dense_);
  reduce(experts_);
}

void DataParallel::gather_parameters() {
  if (zero_ == 0) return;
  for (Segment* s : {&dense_, &experts_}) {
    if (s->comm->size() == 1 || s->range.padded == 0) continue;
    const Tensor v = ps_.values().view(s->range.begin, {s->range.padded});
    be_.copy(v.view(s->comm->rank() * s->shard_size, {s->shard_size}), s->gather_send.view(0, {s->shard_size}));
    s->comm->all_gather(s->gather_send.raw(), v.raw(), s->shard_size, comm_type_of(v.dtype()));
  }
}

int64_t DataParallel::reduced_gradient_bytes() const {
  if (zero_ < 2) return int64_t(ps_.grads().nbytes());
  return (dense_.shard_size + experts_.shard_size) * int64_t(dtype_size(ps_.grads().dtype()));
}

bool DataParallel::writes_value(const ParamInfo& p) const {
  return (p.is_expert() ? g_.edp : g_.dp)->rank() == 0;
}

bool DataParallel::writes_moments(const ParamInfo& p) const { return zero_ >= 1 || writes_value(p); }

}  // namespace sy
