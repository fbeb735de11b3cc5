// The NCCL communicator: parallel/comm.h's Communicator on device buffers, one GPU per rank,
// bootstrapped over a host communicator (the MPI one: rank 0 makes the NCCL unique id and
// broadcasts it). docs/cuda.md, "The NCCL communicator", has the whole picture.
//
// Streams. Every operation is enqueued on the communicator's own stream (comm_stream(), high
// priority, non-blocking), behind an event recorded on the compute stream at the call, so it reads
// what the compute stream's work so far produced. The blocking interface (all_reduce, ...) then
// waits on the host for the operation's event, with the timeout; the *_async forms return a
// request at once, so compute can go on while the transfer runs, e.g. the gradient all-reduce of
// layer i during the backward of layer i - 1:
//
//     CommRequest r = nccl.all_reduce_async(grad_i, n, CommType::F32, ReduceOp::Avg);
//     ... enqueue the backward of layer i - 1 on the compute stream ...
//     nccl.stream_wait(r);   // the compute stream waits on the device (optional), then
//     nccl.wait(r);          // the host waits, with the timeout; every request is waited once
//
// The buffers of a pending operation belong to it until its request is waited (or a stream has
// been made to wait for it and only that stream touches them).
//
// Conventions as the MPI communicator's: CommStats bytes (comm.h), CommObserver brackets around
// every wait, Avg on floating point only, all_gather in place when send is recv's own block,
// reduce_scatter in place when send == recv (the result lands at the front). Differences forced by
// NCCL:
//  * Point-to-point tags are not matched: NCCL pairs the sends and receives between two ranks in
//    the order they are posted, so both sides must post in the same order. isend/irecv only queue
//    the transfer; the queue starts, as one NCCL group, at the next wait(), stream_wait() or
//    collective, so a ring of irecv + isend + wait cannot deadlock. A rank that posts a transfer and
//    then a collective must find its peer doing the same (the transfer goes first).
//  * Timeouts (CommTimeout after timeout_s; from the start of a blocking call, from the start of
//    wait() for a request) abort the NCCL communicator (ncclCommAbort): afterwards it refuses every
//    operation (logic_error), as the MPI communicator does after a collective timed out. Which peer
//    is missing is not known (the MPI communicator's arrival tokens have no NCCL counterpart);
//    under the emulator the message ends with the transport's, which names it.
//  * Buffers are device pointers: host scalars (stop flags, a loss) stay on the MPI communicator.
//  * Counts have no int limit.
#pragma once

#include <memory>

#include "engine/cuda/cuda_compat.h"
#include "parallel/comm.h"

namespace sy::nccl {
SY_CUDA_NS_BEGIN

struct NcclOptions {
  int device = -1;                 // CUDA device; -1: the local rank from the launch environment
  cudaStream_t compute = nullptr;  // the stream producing and consuming the buffers (null: the legacy default stream)
};

class NcclComm : public Communicator {
 public:
  virtual int device() const = 0;
  virtual cudaStream_t comm_stream() const = 0;
  virtual cudaStream_t compute_stream() const = 0;
  // Operations called afterwards order themselves after this stream's work.
  virtual void set_compute_stream(cudaStream_t s) = 0;

  // Enqueue and return at once (byte accounting at the call, as for isend). Complete with wait().
  virtual CommRequest all_reduce_async(void* buf, int64_t count, CommType t, ReduceOp op) = 0;
  virtual CommRequest reduce_scatter_async(const void* send, void* recv, int64_t recv_count, CommType t, ReduceOp op) = 0;
  virtual CommRequest all_gather_async(const void* send, void* recv, int64_t send_count, CommType t) = 0;
  virtual CommRequest all_to_all_v_async(const void* send, std::span<const int64_t> send_counts, void* recv,
                                         std::span<const int64_t> recv_counts, CommType t) = 0;
  virtual CommRequest broadcast_async(void* buf, int64_t count, CommType t, int root) = 0;

  // Makes stream s wait on the device until the request's operation is done; the host does not
  // wait and the request stays pending (wait() it later). Default: the compute stream.
  virtual void stream_wait(const CommRequest& r, cudaStream_t s) = 0;
  void stream_wait(const CommRequest& r) { stream_wait(r, compute_stream()); }
  // Whether the operation is done, without waiting (starts queued point-to-point transfers).
  virtual bool test(const CommRequest& r) = 0;

  // subgroup() as an NcclComm: a new NCCL communicator of the members (a fresh unique id
  // broadcast over the bootstrap's subgroup), on the same device and compute stream.
  virtual std::unique_ptr<NcclComm> nccl_subgroup(const std::vector<int>& members, const std::string& name) = 0;
};

// The NCCL communicator over the ranks of `bootstrap` (collective over them), with its name and
// timeout. It keeps a duplicate of the bootstrap (bootstrap.subgroup of everyone) for making
// subgroups, so `bootstrap` may be destroyed first. Selects the device (cudaSetDevice).
std::unique_ptr<NcclComm> make_nccl_comm(Communicator& bootstrap, const NcclOptions& options = {});

SY_CUDA_NS_END
}  // namespace sy::nccl
