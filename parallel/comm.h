// The communicator interface: every collective and point-to-point operation the parallel
// features use, over one group of ranks. Implementations: LocalComm (one process, no MPI),
// MpiComm (Open MPI over host memory); an NCCL one (device memory) fills the same interface.
//
// Every operation that can wait for other ranks fails after the communicator's timeout with a
// CommTimeout whose message names the operation, the group and the ranks that did not arrive;
// nothing in a training job hangs forever.
//
// Each operation records the payload bytes this rank sent (CommStats), by these conventions:
//   all_to_all_v : sum over peers p != me of send_counts[p] * elem
//   send / isend : count * elem
//   all_gather   : send_count * elem * (n - 1)      (my piece reaches every peer)
//   reduce_scatter: recv_count * elem * (n - 1)     (the pieces owned by the peers)
//   all_reduce   : 2 * (n - 1) / n * count * elem   (ring: reduce-scatter then all-gather)
//   broadcast    : count * elem * (n - 1) at the root, 0 elsewhere
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace sy {

enum class ReduceOp : uint8_t { Sum, Avg, Max };
// Element types a communicator moves: the engine's dtypes plus 64-bit integers for counts.
// BF16 is moved (bfloat16 activations between expert-parallel ranks), never reduced: reductions
// of it are refused (sum in float32).
enum class CommType : uint8_t { F32, F64, I32, I64, BF16 };
size_t comm_type_size(CommType t);
CommType comm_type_of(DType d);

struct CommTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CommStats {
  int64_t bytes_sent = 0;
  std::map<std::string, int64_t> bytes_by_op;  // "all_reduce", "all_to_all_v", ...
  std::map<std::string, int64_t> calls_by_op;
  void record(const std::string& op, int64_t bytes) {
    bytes_sent += bytes;
    bytes_by_op[op] += bytes;
    ++calls_by_op[op];
  }
  void reset() { *this = CommStats{}; }
  void add(const CommStats& o) {
    bytes_sent += o.bytes_sent;
    for (const auto& [op, b] : o.bytes_by_op) bytes_by_op[op] += b;
    for (const auto& [op, n] : o.calls_by_op) calls_by_op[op] += n;
  }
};

// Told when this rank enters and leaves an operation that waits for other ranks, so a watchdog
// outside the communicator can say where a hung rank stands (trainer/heartbeat.h). `op` is a
// string literal; `group` outlives the call. Called on the thread that runs the operation.
struct CommObserver {
  virtual ~CommObserver() = default;
  virtual void enter(const char* op, const std::string& group) = 0;
  virtual void leave() = 0;
};

// A pending point-to-point operation; wait() completes it (or times out).
struct CommRequest {
  int64_t id = -1;
};
// The id of a request whose operation completed before it was returned (finish() has nothing to wait for).
inline constexpr int64_t kCompleted = -2;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name ("world", "dp", "ep", ...) and its members as world ranks, for messages.
  virtual const std::string& name() const = 0;
  virtual const std::vector<int>& world_ranks() const = 0;

  virtual void all_reduce(void* buf, int64_t count, CommType t, ReduceOp op) = 0;
  // send holds size() blocks of recv_count elements; block r is reduced into rank r's recv.
  virtual void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommType t, ReduceOp op) = 0;
  // recv holds size() blocks of send_count elements, block r from rank r.
  virtual void all_gather(const void* send, void* recv, int64_t send_count, CommType t) = 0;
  // Counts in elements, one per rank; blocks are packed in rank order in both buffers.
  virtual void all_to_all_v(const void* send, std::span<const int64_t> send_counts, void* recv,
                            std::span<const int64_t> recv_counts, CommType t) = 0;
  virtual void broadcast(void* buf, int64_t count, CommType t, int root) = 0;
  virtual void barrier() = 0;
  virtual CommRequest isend(const void* buf, int64_t count, CommType t, int peer, int tag) = 0;
  virtual CommRequest irecv(void* buf, int64_t count, CommType t, int peer, int tag) = 0;
  virtual void wait(CommRequest& r) = 0;
  void send(const void* buf, int64_t count, CommType t, int peer, int tag) {
    CommRequest r = isend(buf, count, t, peer, tag);
    wait(r);
  }
  void recv(void* buf, int64_t count, CommType t, int peer, int tag) {
    CommRequest r = irecv(buf, count, t, peer, tag);
    wait(r);
  }

  // An all-reduce the caller need not wait for: the NCCL communicator enqueues it on its own
  // stream and returns, so the backward can go on computing while it runs (parallel/data_parallel.h).
  // Host-memory communicators run it before they return. Complete it with finish().
  virtual CommRequest all_reduce_async(void* buf, int64_t count, CommType t, ReduceOp op) {
    all_reduce(buf, count, t, op);
    return CommRequest{kCompleted};
  }
  // The device work the caller enqueues from now on runs after the request's operation (the
  // NCCL communicator: its compute stream waits on the device; the host does not wait, and the
  // request stays to be finished). Nothing to do where the operation completed in the call.
  virtual void compute_waits_for(const CommRequest&) {}
  // Completes a request of all_reduce_async (or isend, irecv): waits, with the timeout.
  void finish(CommRequest& r) {
    if (r.id == kCompleted) {
      r.id = -1;
      return;
    }
    wait(r);
  }

  // The sub-group of this communicator made of `members` (ranks of this communicator, which
  // must include this rank); every member must call it with the same list (collective).
  virtual std::unique_ptr<Communicator> subgroup(const std::vector<int>& members, const std::string& name) = 0;

  CommStats& stats() { return stats_; }
  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double s) { timeout_s_ = s; }
  // Null (the default): nobody is told. The observer must outlive the communicator's operations.
  void set_observer(CommObserver* o) { observer_ = o; }

 protected:
  // Brackets one waiting operation for the observer, if any.
  struct Observed {
    CommObserver* o;
    Observed(CommObserver* obs, const char* op, const std::string& group) : o(obs) {
      if (o) o->enter(op, group);
    }
    ~Observed() {
      if (o) o->leave();
    }
    Observed(const Observed&) = delete;
    Observed& operator=(const Observed&) = delete;
  };
  CommStats stats_;
  double timeout_s_ = 600;
  CommObserver* observer_ = nullptr;
};

// The single-process communicator: size 1, every operation a local copy.
std::unique_ptr<Communicator> make_local_comm();

}  // namespace sy
