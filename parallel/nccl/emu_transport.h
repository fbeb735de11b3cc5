// The emulated NCCL's transport (engine/cuda/emu/emu_nccl.h) over a host communicator: what the
// NCCL communicator registers under its unique id in the emulator build, so an emulated NCCL
// communicator moves its data through MPI between the rank processes. Emulator build only.
#pragma once

#include <vector>

#include "parallel/comm.h"
#include "parallel/nccl/nccl_compat.h"

#if !SY_CUDA_EMULATED
#error "emu_transport.h belongs to the emulator build"
#endif

namespace sy::nccl {
SY_CUDA_NS_BEGIN
namespace detail {

class CommTransport final : public syemu::NcclTransport {
 public:
  // comm: a communicator of the same ranks kept for this transport alone (its traffic and stats
  // stay apart from everyone else's). owner: the NCCL communicator, whose timeout the transport
  // follows at every operation, so it gives up when the NCCL communicator's wait would.
  CommTransport(std::unique_ptr<Communicator> comm, const Communicator& owner) : comm_(std::move(comm)), owner_(owner) {}

  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }

  void all_reduce(void* buf, size_t count, ncclDataType_t t, ncclRedOp_t op) override {
    guarded([&] { comm_->all_reduce(buf, n(count), type(t), reduce(op)); });
  }
  void reduce_scatter(const void* send, void* recv, size_t recv_count, ncclDataType_t t, ncclRedOp_t op) override {
    guarded([&] { comm_->reduce_scatter(send, recv, n(recv_count), type(t), reduce(op)); });
  }
  void all_gather(const void* send, void* recv, size_t count, ncclDataType_t t) override {
    guarded([&] { comm_->all_gather(send, recv, n(count), type(t)); });
  }
  void broadcast(void* buf, size_t count, ncclDataType_t t, int root) override {
    guarded([&] { comm_->broadcast(buf, n(count), type(t), root); });
  }
  // Receives first, then sends, then every wait: one tag, so between two ranks the transfers pair
  // in posting order (MPI does not overtake), which is NCCL's rule.
  void exchange(std::span<const P2p> ops) override {
    guarded([&] {
      std::vector<CommRequest> reqs;
      for (const P2p& o : ops)
        if (!o.is_send) reqs.push_back(comm_->irecv(o.buf, n(o.count), type(o.type), o.peer, kTag));
      for (const P2p& o : ops)
        if (o.is_send) reqs.push_back(comm_->isend(o.buf, n(o.count), type(o.type), o.peer, kTag));
      for (CommRequest& r : reqs) comm_->wait(r);
    });
  }

 private:
  static constexpr int kTag = 0;

  static int64_t n(size_t count) { return static_cast<int64_t>(count); }
  static CommType type(ncclDataType_t t) {
    switch (t) {
      case ncclFloat32: return CommType::F32;
      case ncclFloat64: return CommType::F64;
      case ncclInt32: return CommType::I32;
      case ncclInt64: return CommType::I64;
      case ncclBfloat16: return CommType::BF16;  // moved (token rows), never reduced: the host communicator refuses that
      default: throw std::invalid_argument("the emulated NCCL transport moves float32, float64, int32, int64 and bfloat16 only");
    }
  }
  static ReduceOp reduce(ncclRedOp_t op) {
    switch (op) {
      case ncclSum: return ReduceOp::Sum;
      case ncclAvg: return ReduceOp::Avg;
      case ncclMax: return ReduceOp::Max;
      default: throw std::invalid_argument("the emulated NCCL transport reduces with sum, avg and max only");
    }
  }
  // A transport timeout is the emulated operation never completing (NcclHang), not an error.
  template <class F> void guarded(F&& f) {
    comm_->set_timeout_s(owner_.timeout_s());
    try {
      f();
    } catch (const CommTimeout& e) {
      throw syemu::NcclHang(e.what());
    }
  }

  std::unique_ptr<Communicator> comm_;
  const Communicator& owner_;
};

}  // namespace detail
SY_CUDA_NS_END
}  // namespace sy::nccl
