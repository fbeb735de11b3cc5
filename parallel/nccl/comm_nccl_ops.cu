// The NCCL communicator's operations (comm_nccl.h): each checks its arguments, starts the queued
// point-to-point transfers, orders the communication stream after the compute stream, makes its
// NCCL calls on the communication stream and returns a request for the event that follows them.
// Byte accounting is parallel/comm.h's, recorded when the operation is enqueued. An empty
// operation makes no NCCL call (every rank's count is the same) but keeps its place in the order.
#include "parallel/nccl/comm_nccl_impl.h"

namespace sy::nccl {
SY_CUDA_NS_BEGIN
namespace detail {

CommRequest NcclCommImpl::all_reduce_at(void* buf, int64_t count, CommType t, ReduceOp op, Clock::time_point deadline) {
  check_usable("all_reduce");
  check_count("all_reduce", count);
  check_reduce("all_reduce", t, op);
  CommRequest r = collective("all_reduce", deadline, [&] {
    if (count == 0) return;
    settle(SY_NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(t), nccl_op(op), comm_, stream_)), on("all_reduce"), kWhy, deadline);
  });
  const int n = size();
  stats_.record("all_reduce", 2 * (n - 1) * count * static_cast<int64_t>(comm_type_size(t)) / n);
  return r;
}

CommRequest NcclCommImpl::reduce_scatter_at(const void* send, void* recv, int64_t k, CommType t, ReduceOp op,
                                            Clock::time_point deadline) {
  check_usable("reduce_scatter");
  check_count("reduce_scatter", k);
  check_reduce("reduce_scatter", t, op);
  const size_t elem = comm_type_size(t);
  CommRequest r = collective("reduce_scatter", deadline, [&] {
    if (k == 0) return;
    // send == recv means "my block ends up at the front" (as for MPI); NCCL's in-place form has the
    // result in my own block instead, so it is moved to the front afterwards, on the same stream.
    char* own = static_cast<char*>(recv) + rank() * k * elem;
    settle(SY_NCCL_CHECK(ncclReduceScatter(send, send == recv ? own : recv, k, nccl_type(t), nccl_op(op), comm_, stream_)),
           on("reduce_scatter"), kWhy, deadline);
    if (send == recv && rank() != 0)  // [0, k) and [rank k, (rank + 1) k) do not overlap
      SY_CUDA_CHECK(cudaMemcpyAsync(recv, own, k * elem, cudaMemcpyDeviceToDevice, stream_));
  });
  stats_.record("reduce_scatter", k * static_cast<int64_t>(elem) * (size() - 1));
  return r;
}

CommRequest NcclCommImpl::all_gather_at(const void* send, void* recv, int64_t k, CommType t, Clock::time_point deadline) {
  check_usable("all_gather");
  check_count("all_gather", k);
  const size_t elem = comm_type_size(t);
  // In place (send is my block of recv) is NCCL's own in-place form: passed through as it is.
  CommRequest r = collective("all_gather", deadline, [&] {
    if (k == 0) return;
    settle(SY_NCCL_CHECK(ncclAllGather(send, recv, k, nccl_type(t), comm_, stream_)), on("all_gather"), kWhy, deadline);
  });
  stats_.record("all_gather", k * static_cast<int64_t>(elem) * (size() - 1));
  return r;
}

CommRequest NcclCommImpl::all_to_all_v_at(const void* send, std::span<const int64_t> sc, void* recv,
                                          std::span<const int64_t> rc, CommType t, Clock::time_point deadline) {
  check_usable("all_to_all_v");
  const int n = size(), me = rank();
  if (sc.size() != static_cast<size_t>(n) || rc.size() != static_cast<size_t>(n))
    throw std::invalid_argument("all_to_all_v on " + group() + ": expected " + std::to_string(n) + " counts per buffer, got " +
                                std::to_string(sc.size()) + " send and " + std::to_string(rc.size()) + " recv");
  std::vector<int64_t> so(n), ro(n);  // block offsets in elements
  int64_t sent = 0;
  for (int p = 0; p < n; ++p) {
    check_count("all_to_all_v", sc[p]);
    check_count("all_to_all_v", rc[p]);
    if (p + 1 < n) {
      so[p + 1] = so[p] + sc[p];
      ro[p + 1] = ro[p] + rc[p];
    }
    if (p != me) sent += sc[p];
  }
  if (sc[me] != rc[me])
    throw std::invalid_argument("all_to_all_v on " + group() + ": " + std::to_string(sc[me]) + " elements to itself but " +
                                std::to_string(rc[me]) + " expected from itself");
  const size_t elem = comm_type_size(t);
  const char* s = static_cast<const char*>(send);
  char* d = static_cast<char*>(recv);
  const ncclDataType_t type = nccl_type(t);
  CommRequest r = collective("all_to_all_v", deadline, [&] {
    if (sc[me] > 0)  // my own block is a copy on the communication stream
      SY_CUDA_CHECK(cudaMemcpyAsync(d + ro[me] * elem, s + so[me] * elem, sc[me] * elem, cudaMemcpyDeviceToDevice, stream_));
    // One group of sends and receives, so every pair runs concurrently; empty pieces are skipped
    // on both sides (my send count to p is p's receive count from me).
    SY_NCCL_CHECK(ncclGroupStart());
    try {
      for (int p = 0; p < n; ++p) {
        if (p == me) continue;
        if (sc[p] > 0) SY_NCCL_CHECK(ncclSend(s + so[p] * elem, sc[p], type, p, comm_, stream_));
        if (rc[p] > 0) SY_NCCL_CHECK(ncclRecv(d + ro[p] * elem, rc[p], type, p, comm_, stream_));
      }
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    settle(SY_NCCL_CHECK(ncclGroupEnd()), on("all_to_all_v"), kWhy, deadline);
  });
  stats_.record("all_to_all_v", sent * static_cast<int64_t>(elem));
  return r;
}

CommRequest NcclCommImpl::broadcast_at(void* buf, int64_t count, CommType t, int root, Clock::time_point deadline) {
  check_usable("broadcast");
  check_count("broadcast", count);
  check_peer("broadcast", root);
  CommRequest r = collective("broadcast", deadline, [&] {
    if (count == 0) return;
    settle(SY_NCCL_CHECK(ncclBroadcast(buf, buf, count, nccl_type(t), root, comm_, stream_)), on("broadcast"), kWhy, deadline);
  });
  stats_.record("broadcast", rank() == root ? count * static_cast<int64_t>(comm_type_size(t)) * (size() - 1) : 0);
  return r;
}

// NCCL has no barrier: a one-element all-reduce on the communicator's scratch int does it.
void NcclCommImpl::barrier() {
  check_usable("barrier");
  blocking([&](Clock::time_point deadline) {
    return collective("barrier", deadline, [&] {
      settle(SY_NCCL_CHECK(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_)), on("barrier"), kWhy, deadline);
    });
  });
  stats_.record("barrier", 0);
}

// Transfers are queued, not enqueued: they start together at the next wait, stream_wait, test or
// collective (comm_nccl.h says why).
CommRequest NcclCommImpl::post_p2p(bool is_send, void* buf, int64_t count, CommType t, int peer, int tag) {
  const char* op = is_send ? "isend" : "irecv";
  check_usable(op);
  check_peer(op, peer);
  check_count(op, count);
  if (tag < 0) throw std::invalid_argument(std::string(op) + ": negative tag " + std::to_string(tag));
  Pending p{is_send ? "send" : "recv"};
  p.is_send = is_send;
  p.buf = buf;
  p.count = static_cast<size_t>(count);
  p.type = nccl_type(t);
  p.peer = peer;
  p.tag = tag;
  stats_.record(p.op, is_send ? count * static_cast<int64_t>(comm_type_size(t)) : 0);
  CommRequest r = add(p);
  queued_.push_back(r.id);
  return r;
}

}  // namespace detail
SY_CUDA_NS_END
}  // namespace sy::nccl
