#include "parallel/data_parallel.h"

#include <algorithm>
#include <stdexcept>

namespace sy {

DataParallel::DataParallel(DataParallelGroups groups, Backend& be, ParamStore& ps, int zero, int64_t bucket_elems,
                           bool overlap)
    : g_(groups), be_(be), ps_(ps), zero_(zero), bucket_elems_(std::max<int64_t>(1, bucket_elems)), overlap_(overlap) {
  if (!g_.dp || !g_.tp || !g_.ep || !g_.edp || !g_.all) throw std::logic_error("DataParallel needs all its groups");
  // The ranks holding the model are TP x DP for the dense part and ETP x EP x EDP for the experts.
  const int etp = g_.etp ? g_.etp->size() : 1, pp = g_.pp ? g_.pp->size() : 1;
  if (g_.all->size() != g_.tp->size() * g_.dp->size() * pp || g_.all->size() != etp * g_.ep->size() * g_.edp->size() * pp)
    throw std::logic_error("the dense and expert groups do not tile the same ranks");
  auto buffers = [](Communicator* b, Communicator* host) -> Communicator& {
    if (b && (b->size() != host->size() || b->rank() != host->rank()))
      throw std::logic_error("a buffer communicator does not hold its group's ranks in its order");
    return b ? *b : *host;
  };
  Communicator& dp_buf = buffers(g_.dp_buffers, g_.dp);
  setup(seg_[0], dp_buf, ps.segment(SegmentKind::Replicated), 1.0);
  setup(seg_[1], dp_buf, ps.segment(SegmentKind::TpRows), 1.0);
  setup(seg_[2], buffers(g_.edp_buffers, g_.edp), ps.expert_segment(), 1.0 / double(g_.dp->size()));
  tp_buffers_ = &buffers(g_.tp_buffers, g_.tp);
  for (size_t i = 0; i < ps.infos().size(); ++i)
    if (ps.infos()[i].tp == TpSplit::Partial && g_.tp->size() > 1) partial_.push_back(int(i));
  if (overlap_ && zero_ < 2) setup_buckets();
}

// comm: the communicator the segment's buffers move over (its group's ranks, in its order).
void DataParallel::setup(Segment& s, Communicator& comm, const ParamSegment& range, double post_scale) {
  const int n = comm.size();
  if (range.padded % n != 0) throw std::logic_error("a flat-buffer segment is not padded to its group's size");
  s.comm = &comm;
  s.range = range;
  s.post_scale = post_scale;
  s.sum = &range == &ps_.expert_segment();
  s.shard_size = range.padded / n;
  const int64_t end = range.begin + range.numel;
  if (zero_ >= 1) {
    s.shard_begin = std::min(end, range.begin + comm.rank() * s.shard_size);
    s.shard_end = std::min(end, s.shard_begin + s.shard_size);
    // The all-gather's send buffer; a group of one has nothing to gather.
    MemScope scope(be_, MemCategory::Communication);
    if (n > 1) s.gather_send = be_.empty({std::max<int64_t>(1, s.shard_size)}, ps_.values().dtype());
  } else {
    s.shard_begin = range.begin;
    s.shard_end = end;
  }
  MemScope scope(be_, MemCategory::Gradients);
  if (zero_ >= 2) s.shard_grads = be_.zeros({std::max<int64_t>(1, s.shard_size)}, ps_.values().dtype());
}

// The buckets are those reduce() cuts each all-reduced segment into: bucket_elems_ runs from the
// segment's start, over its padding too.
void DataParallel::setup_buckets() {
  int first[3] = {-1, -1, -1};  // each all-reduced segment's first bucket
  for (int k = 0; k < 3; ++k) {
    const Segment& s = seg_[k];
    if (s.comm->size() == 1 || s.range.padded == 0) continue;
    first[k] = int(buckets_.size());
    for (int64_t off = 0; off < s.range.padded; off += bucket_elems_)
      buckets_.push_back(Bucket{k, s.range.begin + off, std::min(bucket_elems_, s.range.padded - off)});
  }
  param_buckets_.assign(ps_.infos().size(), {});
  for (size_t i = 0; i < ps_.infos().size(); ++i) {
    const ParamInfo& p = ps_.infos()[i];
    const int k = int(p.segment());  // seg_ is indexed by SegmentKind
    if (p.numel == 0 || first[k] < 0) continue;
    const int64_t at = p.offset - seg_[k].range.begin;
    for (int64_t b = at / bucket_elems_; b <= (at + p.numel - 1) / bucket_elems_; ++b)
      param_buckets_[i].push_back(first[k] + int(b));
  }
}

void DataParallel::arm() {
  if (!overlap_ || zero_ >= 2) return;
  for (Bucket& b : buckets_) b.waiting = 0, b.started = false;
  for (const auto& bs : param_buckets_)
    for (int b : bs) ++buckets_[size_t(b)].waiting;
  ready_.assign(ps_.infos().size(), 0);
  started_.clear();
  armed_ = true;
}

void DataParallel::sum_partial(int id) {
  const Tensor g = ps_.grad(id);
  CommRequest r = tp_buffers_->all_reduce_async(g.raw(), g.numel(), comm_type_of(g.dtype()), ReduceOp::Sum);
  tp_buffers_->compute_waits_for(r);  // its bucket's DP reduction, ordered after the compute stream, reads the sum
  started_.emplace_back(tp_buffers_, r);
}

void DataParallel::start(Bucket& b) {
  const Segment& s = seg_[b.seg];
  const Tensor g = ps_.grads().view(b.begin, {b.n});
  // Dense segments average over their group (DP); the expert segment sums over EDP and is
  // scaled by 1/DP afterwards (reduce()).
  CommRequest r = s.comm->all_reduce_async(g.raw(), b.n, comm_type_of(g.dtype()), s.sum ? ReduceOp::Sum : ReduceOp::Avg);
  started_.emplace_back(s.comm, r);
  b.started = true;
}

void DataParallel::gradients_ready(std::span<const int> param_ids) {
  if (!armed_) return;
  std::vector<int> complete;
  for (int id : param_ids) {
    if (id < 0 || ready_[size_t(id)]) continue;
    ready_[size_t(id)] = 1;
    if (ps_.infos()[size_t(id)].tp == TpSplit::Partial && tp_buffers_->size() > 1) sum_partial(id);
    for (int b : param_buckets_[size_t(id)])
      if (--buckets_[size_t(b)].waiting == 0) complete.push_back(b);
  }
  // In bucket order, whatever order the ids came in: every rank of a group starts the same sequence.
  std::sort(complete.begin(), complete.end());
  for (int b : complete) start(buckets_[size_t(b)]);
}

OptimShard DataParallel::optimizer_shard() {
  OptimShard s;
  for (Segment& seg : seg_) {
    OptimPiece p{seg.shard_begin, seg.shard_end, Tensor()};
    if (zero_ >= 2 && seg.shard_end > seg.shard_begin) p.grads = seg.shard_grads.view(0, {seg.shard_end - seg.shard_begin});
    s.pieces.push_back(p);
  }
  // Every element must count once: replicated parameters are the same on every TP rank, TP
  // blocks differ between TP ranks, experts between EP ranks (and their slices between ETP
  // ranks); ZeRO shards partition each segment over its group.
  s.reduce_sum_squares = [this](const std::vector<double>& local) {
    double rep = local.at(0), rest[2] = {local.at(1), local.at(2)};
    if (zero_ >= 1) {
      if (g_.dp->size() > 1) g_.dp->all_reduce(&rep, 1, CommType::F64, ReduceOp::Sum);
      double other = rest[0] + rest[1];
      if (g_.all->size() > 1) g_.all->all_reduce(&other, 1, CommType::F64, ReduceOp::Sum);  // every stage too
      if (g_.pp && g_.pp->size() > 1) g_.pp->all_reduce(&rep, 1, CommType::F64, ReduceOp::Sum);
      return rep + other;
    }
    if (g_.tp->size() > 1) g_.tp->all_reduce(&rest[0], 1, CommType::F64, ReduceOp::Sum);
    if (g_.ep->size() > 1) g_.ep->all_reduce(&rest[1], 1, CommType::F64, ReduceOp::Sum);
    if (g_.etp && g_.etp->size() > 1) g_.etp->all_reduce(&rest[1], 1, CommType::F64, ReduceOp::Sum);
    double total = rep + rest[0] + rest[1];
    if (g_.pp && g_.pp->size() > 1) g_.pp->all_reduce(&total, 1, CommType::F64, ReduceOp::Sum);  // each stage its own
    return total;
  };
  return s;
}

void DataParallel::reduce(Segment& s, bool communicated) {
  if (s.range.padded == 0) return;
  const Tensor g = ps_.grads().view(s.range.begin, {s.range.padded});
  const CommType t = comm_type_of(g.dtype());
  // Dense segments average over their group (DP); the expert segment sums over EDP and then
  // scales by 1/DP (the two groups differ under TP and EP).
  const ReduceOp op = s.sum ? ReduceOp::Sum : ReduceOp::Avg;
  Tensor reduced = g;
  if (zero_ >= 2) {
    reduced = s.shard_grads.view(0, {s.shard_size});
    if (s.comm->size() == 1) be_.copy(g.view(0, {s.shard_size}), reduced);
    else s.comm->reduce_scatter(g.raw(), reduced.raw(), s.shard_size, t, op);
  } else if (s.comm->size() > 1 && !communicated) {
    const size_t elem = dtype_size(g.dtype());
    for (int64_t off = 0; off < g.numel(); off += bucket_elems_) {
      const int64_t n = std::min(bucket_elems_, g.numel() - off);
      s.comm->all_reduce(static_cast<char*>(g.raw()) + off * elem, n, t, op);
    }
  }
  if (s.sum && s.post_scale != 1.0) be_.scale(reduced, s.post_scale);
}

void DataParallel::reduce_gradients() {
  const bool overlapped = armed_;
  armed_ = false;
  // What no backward started (everything, without overlap), in the same order on every rank:
  // the partial sums first, then the buckets.
  for (int id : partial_)
    if (!overlapped || !ready_[size_t(id)]) sum_partial(id);
  if (overlapped) {
    in_backward_ = 0;
    for (Bucket& b : buckets_) {
      in_backward_ += b.started;
      if (!b.started) start(b);
    }
  }
  for (auto& [comm, r] : started_) comm->finish(r);
  started_.clear();
  for (Segment& s : seg_) reduce(s, overlapped);  // overlapped: the buckets did every all-reduce
}

void DataParallel::gather_parameters() {
  if (zero_ == 0) return;
  for (Segment& seg : seg_) {
    Segment* s = &seg;
    if (s->comm->size() == 1 || s->range.padded == 0) continue;
    const Tensor v = ps_.values().view(s->range.begin, {s->range.padded});
    be_.copy(v.view(s->comm->rank() * s->shard_size, {s->shard_size}), s->gather_send.view(0, {s->shard_size}));
    s->comm->all_gather(s->gather_send.raw(), v.raw(), s->shard_size, comm_type_of(v.dtype()));
  }
}

int64_t DataParallel::reduced_gradient_bytes() const {
  if (zero_ < 2) return int64_t(ps_.grads().nbytes());
  return (seg_[0].shard_size + seg_[1].shard_size + seg_[2].shard_size) * int64_t(dtype_size(ps_.grads().dtype()));
}

bool DataParallel::writes_value(const ParamInfo& p) const {
  switch (p.segment()) {
    case SegmentKind::Expert: return g_.edp->rank() == 0;
    case SegmentKind::TpRows: return g_.dp->rank() == 0;
    default: return g_.dp->rank() == 0 && g_.tp->rank() == 0;
  }
}

bool DataParallel::writes_moments(const ParamInfo& p) const {
  if (zero_ == 0) return writes_value(p);
  return p.segment() != SegmentKind::Replicated || g_.tp->rank() == 0;
}

}  // namespace sy
