// NcclCommImpl, the NCCL communicator's implementation class, shared by comm_nccl.cu (set-up,
// teardown, waiting, subgroups) and comm_nccl_ops.cu (the operations). Internal to parallel/nccl/.
//
// The NCCL communicator is nonblocking (ncclConfig_t::blocking = 0): every NCCL call returns at
// once, possibly with ncclInProgress, and settle() polls its state against the deadline, so no
// call can hang the host, not even the lazy connection set-up at a first transfer. Completion is
// an event recorded on the communication stream after the operation, polled with cudaEventQuery
// while ncclCommGetAsyncError is watched for a failure; at the deadline the communicator is
// aborted (ncclCommAbort makes its kernels exit) and CommTimeout thrown.
#pragma once

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "engine/cuda/cuda_check.h"
#include "parallel/comm_text.h"
#include "parallel/launch_env.h"
#include "parallel/nccl/comm_nccl.h"
#include "parallel/nccl/nccl_check.h"

namespace sy::nccl {
SY_CUDA_NS_BEGIN
namespace detail {

using Clock = std::chrono::steady_clock;
using ::sy::detail::rank_list;
using ::sy::detail::seconds;

inline Clock::time_point deadline_after(double s) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::min(s, 1e9)));
}

// Spin (short operations finish here), then yield, then sleep 50 us between polls, as the MPI
// communicator's wait does: a rank waiting seconds for a slow peer does not burn a core.
class Backoff {
 public:
  void pause() {
    if (++polls_ <= 64) return;
    if (Clock::now() - start_ < std::chrono::milliseconds(2)) {
      sched_yield();
    } else {
      timespec ts{0, 50'000};
      nanosleep(&ts, nullptr);
    }
  }

 private:
  int polls_ = 0;
  Clock::time_point start_ = Clock::now();
};

inline ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::F32: return ncclFloat32;
    case CommType::F64: return ncclFloat64;
    case CommType::I32: return ncclInt32;
    case CommType::I64: return ncclInt64;
    case CommType::BF16: return ncclBfloat16;
  }
  throw std::invalid_argument("unknown CommType");
}

inline ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : op == ReduceOp::Avg ? ncclAvg : ncclMax; }

inline void check_count(const char* op, int64_t n) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative count " + std::to_string(n));
}

// One GPU per rank, chosen by local rank (or as asked).
inline int pick_device(int requested) {
  int count = 0;
  SY_CUDA_CHECK(cudaGetDeviceCount(&count));
#if SY_CUDA_EMULATED
  (void)requested;
  return 0;  // every emulated rank is a process of its own, with its own (only) device
#else
  const int d = requested >= 0 ? requested : read_launch_env().local_rank;
  if (d >= count)
    throw std::runtime_error("NCCL communicator: this rank needs GPU " + std::to_string(d) + " but the node has " +
                             std::to_string(count) + " (one GPU per rank: start at most as many ranks per node as GPUs)");
  return d;
#endif
}

class NcclCommImpl final : public NcclComm {
 public:
  NcclCommImpl(std::unique_ptr<Communicator> boot, int device, cudaStream_t compute, double timeout_s)
      : boot_(std::move(boot)), name_(boot_->name()), world_ranks_(boot_->world_ranks()), device_(device), compute_(compute) {
    timeout_s_ = timeout_s;
  }
  ~NcclCommImpl() override;
  void init();

  int rank() const override { return boot_->rank(); }
  int size() const override { return boot_->size(); }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  int device() const override { return device_; }
  cudaStream_t comm_stream() const override { return stream_; }
  cudaStream_t compute_stream() const override { return compute_; }
  void set_compute_stream(cudaStream_t s) override { compute_ = s; }

  void all_reduce(void* buf, int64_t count, CommType t, ReduceOp op) override {
    blocking([&](auto d) { return all_reduce_at(buf, count, t, op, d); });
  }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommType t, ReduceOp op) override {
    blocking([&](auto d) { return reduce_scatter_at(send, recv, recv_count, t, op, d); });
  }
  void all_gather(const void* send, void* recv, int64_t send_count, CommType t) override {
    blocking([&](auto d) { return all_gather_at(send, recv, send_count, t, d); });
  }
  void all_to_all_v(const void* send, std::span<const int64_t> sc, void* recv, std::span<const int64_t> rc, CommType t) override {
    blocking([&](auto d) { return all_to_all_v_at(send, sc, recv, rc, t, d); });
  }
  void broadcast(void* buf, int64_t count, CommType t, int root) override {
    blocking([&](auto d) { return broadcast_at(buf, count, t, root, d); });
  }
  void barrier() override;

  CommRequest all_reduce_async(void* buf, int64_t count, CommType t, ReduceOp op) override {
    return all_reduce_at(buf, count, t, op, deadline_after(timeout_s_));
  }
  CommRequest reduce_scatter_async(const void* send, void* recv, int64_t recv_count, CommType t, ReduceOp op) override {
    return reduce_scatter_at(send, recv, recv_count, t, op, deadline_after(timeout_s_));
  }
  CommRequest all_gather_async(const void* send, void* recv, int64_t send_count, CommType t) override {
    return all_gather_at(send, recv, send_count, t, deadline_after(timeout_s_));
  }
  CommRequest all_to_all_v_async(const void* send, std::span<const int64_t> sc, void* recv, std::span<const int64_t> rc,
                                 CommType t) override {
    return all_to_all_v_at(send, sc, recv, rc, t, deadline_after(timeout_s_));
  }
  CommRequest broadcast_async(void* buf, int64_t count, CommType t, int root) override {
    return broadcast_at(buf, count, t, root, deadline_after(timeout_s_));
  }

  CommRequest isend(const void* buf, int64_t count, CommType t, int peer, int tag) override {
    return post_p2p(true, const_cast<void*>(buf), count, t, peer, tag);
  }
  CommRequest irecv(void* buf, int64_t count, CommType t, int peer, int tag) override {
    return post_p2p(false, buf, count, t, peer, tag);
  }
  void wait(CommRequest& r) override { wait_until(r, deadline_after(timeout_s_)); }
  void stream_wait(const CommRequest& r, cudaStream_t s) override;
  void compute_waits_for(const CommRequest& r) override { stream_wait(r, compute_); }
  bool test(const CommRequest& r) override;

  std::unique_ptr<Communicator> subgroup(const std::vector<int>& members, const std::string& name) override {
    return nccl_subgroup(members, name);
  }
  std::unique_ptr<NcclComm> nccl_subgroup(const std::vector<int>& members, const std::string& name) override;

 private:
  // A request: an enqueued operation (done: its event), or a transfer still queued (done null).
  struct Pending {
    const char* op;
    cudaEvent_t done = nullptr;
    bool is_send = false;
    void* buf = nullptr;
    size_t count = 0;
    ncclDataType_t type = ncclFloat32;
    int peer = -1, tag = 0;
  };

  std::string group() const { return "group " + name_ + " (world ranks " + rank_list(world_ranks_) + ")"; }
  std::string what(const Pending& p) const {
    if (p.peer < 0) return std::string(p.op) + " on " + group();
    return std::string(p.is_send ? "send to " : "recv from ") + peer_name(p.peer) + " (tag " + std::to_string(p.tag) + ") on " + group();
  }
  std::string why(const Pending& p) const {
    if (p.peer < 0) return kWhy;
    return peer_name(p.peer) + (p.is_send ? " did not receive" : " did not send") + ", or " + kStuck;
  }
  static constexpr const char* kStuck = "an earlier operation on the communication stream is stuck";
  static constexpr const char* kWhy = "it did not complete: a rank did not arrive, or an earlier operation on the "
                                      "communication stream is stuck";
  std::string on(const char* op) const { return std::string(op) + " on " + group(); }
  std::string peer_name(int peer) const { return "world rank " + std::to_string(world_ranks_[peer]); }

  void check_usable(const char* op) const {
    if (broken_)
      throw std::logic_error(std::string(op) + " on " + group() + ": the communicator is unusable after an earlier timeout or NCCL error");
  }
  void check_peer(const char* op, int peer) const {
    if (peer < 0 || peer >= size())
      throw std::invalid_argument(std::string(op) + ": rank " + std::to_string(peer) + " outside " + group());
  }
  void check_reduce(const char* op, CommType t, ReduceOp r) const {
    if (r == ReduceOp::Avg && t != CommType::F32 && t != CommType::F64)
      throw std::invalid_argument(std::string(op) + " on " + group() + ": ReduceOp::Avg needs a floating-point type; use Sum and divide");
  }

  // A blocking operation: the enqueue and the wait share one deadline from the start of the call.
  template <class Enqueue> void blocking(Enqueue&& enqueue) {
    const auto deadline = deadline_after(timeout_s_);
    CommRequest r = enqueue(deadline);
    wait_until(r, deadline);
  }

  CommRequest all_reduce_at(void* buf, int64_t count, CommType t, ReduceOp op, Clock::time_point deadline);
  CommRequest reduce_scatter_at(const void* send, void* recv, int64_t k, CommType t, ReduceOp op, Clock::time_point deadline);
  CommRequest all_gather_at(const void* send, void* recv, int64_t k, CommType t, Clock::time_point deadline);
  CommRequest all_to_all_v_at(const void* send, std::span<const int64_t> sc, void* recv, std::span<const int64_t> rc,
                              CommType t, Clock::time_point deadline);
  CommRequest broadcast_at(void* buf, int64_t count, CommType t, int root, Clock::time_point deadline);
  CommRequest post_p2p(bool is_send, void* buf, int64_t count, CommType t, int peer, int tag);

  // Starts a collective: the queued transfers go first, then the communication stream waits for
  // the compute stream's work so far. enqueue makes the NCCL calls; the request's event follows.
  template <class Enqueue> CommRequest collective(const char* op, Clock::time_point deadline, Enqueue&& enqueue) {
    const Observed watched(observer_, op, name_);
    flush(deadline, on(op), kWhy);
    order_after_compute();
    enqueue();
    return add(Pending{op, record()});
  }
  void order_after_compute() {
    SY_CUDA_CHECK(cudaEventRecord(ready_, compute_));
    SY_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }
  cudaEvent_t record();
  CommRequest add(const Pending& p) {
    pending_.emplace(next_id_, p);
    return CommRequest{next_id_++};
  }
  // Starts the queued transfers, in posting order, as one group; a timeout is reported as what / why.
  void flush(Clock::time_point deadline, const std::string& what, const std::string& why);
  void wait_until(CommRequest& r, Clock::time_point deadline);
  // After an NCCL call: ncclInProgress means still running on this nonblocking communicator.
  void settle(ncclResult_t r, const std::string& what, const std::string& why, Clock::time_point deadline);
  // Whether the event has completed; throws (after aborting) when the communicator failed.
  bool done(cudaEvent_t e, const std::string& what);
  [[noreturn]] void fail(const std::string& message, bool timed_out);

  std::unique_ptr<Communicator> boot_;  // host communicator of the same ranks: unique ids for subgroups
  std::string name_;
  std::vector<int> world_ranks_;
  int device_;
  cudaStream_t compute_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  ncclComm_t comm_ = nullptr;
  bool broken_ = false;
  void* scratch_ = nullptr;  // the barrier's one int32
  std::vector<cudaEvent_t> free_events_;
  std::map<int64_t, Pending> pending_;
  std::vector<int64_t> queued_;  // transfers posted but not started, in posting order
  int64_t next_id_ = 0;
};

}  // namespace detail
SY_CUDA_NS_END
}  // namespace sy::nccl

