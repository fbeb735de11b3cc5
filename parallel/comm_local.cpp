// The single-process communicator. A group of one: every collective is a copy (or nothing), and
// point-to-point messages go to this same rank through a queue matched by tag, so code written
// for n ranks runs unchanged at n = 1.
#include <cstring>
#include <deque>
#include <map>

#include "parallel/comm.h"

namespace sy {

size_t comm_type_size(CommType t) {
  switch (t) {
    case CommType::F32: return 4;
    case CommType::F64: return 8;
    case CommType::I32: return 4;
    case CommType::I64: return 8;
    case CommType::BF16: return 2;
  }
  throw std::invalid_argument("comm_type_size: unknown CommType");
}

CommType comm_type_of(DType d) {
  switch (d) {
    case DType::F32: return CommType::F32;
    case DType::F64: return CommType::F64;
    case DType::I32: return CommType::I32;
    case DType::BF16: return CommType::BF16;
  }
  throw std::invalid_argument("comm_type_of: unknown DType");
}

namespace {

bool is_float(CommType t) { return t == CommType::F32 || t == CommType::F64; }

// Checked here as well as in MpiComm so a program that misuses Avg fails at n = 1 too, not only
// once it is launched on many ranks.
void check_reduce(const char* op, CommType t, ReduceOp r) {
  if (t == CommType::BF16)
    throw std::invalid_argument(std::string(op) + ": bfloat16 is moved, not reduced; reduce in float32");
  if (r == ReduceOp::Avg && !is_float(t))
    throw std::invalid_argument(std::string(op) + ": ReduceOp::Avg needs a floating-point type; use Sum and divide");
}

void check_count(const char* op, int64_t n) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative count " + std::to_string(n));
}

class LocalComm final : public Communicator {
 public:
  explicit LocalComm(std::string name, double timeout_s) : name_(std::move(name)) { timeout_s_ = timeout_s; }

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }

  void all_reduce(void* buf, int64_t count, CommType t, ReduceOp op) override {
    check_count("all_reduce", count);
    check_reduce("all_reduce", t, op);
    stats_.record("all_reduce", 0);
  }

  void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommType t, ReduceOp op) override {
    check_count("reduce_scatter", recv_count);
    check_reduce("reduce_scatter", t, op);
    copy(recv, send, recv_count, t);
    stats_.record("reduce_scatter", 0);
  }

  void all_gather(const void* send, void* recv, int64_t send_count, CommType t) override {
    check_count("all_gather", send_count);
    copy(recv, send, send_count, t);
    stats_.record("all_gather", 0);
  }

  void all_to_all_v(const void* send, std::span<const int64_t> send_counts, void* recv,
                    std::span<const int64_t> recv_counts, CommType t) override {
    if (send_counts.size() != 1 || recv_counts.size() != 1)
      throw std::invalid_argument("all_to_all_v: expected 1 count per rank, got " + std::to_string(send_counts.size()) +
                                  " send and " + std::to_string(recv_counts.size()) + " recv counts");
    check_count("all_to_all_v", send_counts[0]);
    if (send_counts[0] != recv_counts[0])
      throw std::invalid_argument("all_to_all_v: rank 0 sends itself " + std::to_string(send_counts[0]) +
                                  " elements but expects " + std::to_string(recv_counts[0]));
    copy(recv, send, send_counts[0], t);
    stats_.record("all_to_all_v", 0);
  }

  void broadcast(void* buf, int64_t count, CommType t, int root) override {
    check_count("broadcast", count);
    check_peer("broadcast", root);
    stats_.record("broadcast", 0);
  }

  void barrier() override { stats_.record("barrier", 0); }

  CommRequest isend(const void* buf, int64_t count, CommType t, int peer, int tag) override {
    check_count("isend", count);
    check_peer("isend", peer);
    const size_t bytes = static_cast<size_t>(count) * comm_type_size(t);
    stats_.record("send", static_cast<int64_t>(bytes));
    // A receive posted earlier takes the message at once; otherwise it waits in the queue.
    for (auto it = recvs_.begin(); it != recvs_.end(); ++it) {
      if (it->second.tag != tag) continue;
      deliver(it->second, buf, bytes, tag);
      recvs_.erase(it);
      return CommRequest{next_id_++};
    }
    const auto* p = static_cast<const std::byte*>(buf);
    queued_[tag].emplace_back(p, p + bytes);
    return CommRequest{next_id_++};
  }

  CommRequest irecv(void* buf, int64_t count, CommType t, int peer, int tag) override {
    check_count("irecv", count);
    check_peer("irecv", peer);
    stats_.record("recv", 0);
    PendingRecv r{buf, static_cast<size_t>(count) * comm_type_size(t), tag};
    auto q = queued_.find(tag);
    if (q != queued_.end() && !q->second.empty()) {
      deliver(r, q->second.front().data(), q->second.front().size(), tag);
      q->second.pop_front();
      return CommRequest{next_id_++};
    }
    const int64_t id = next_id_++;
    recvs_.emplace(id, r);
    return CommRequest{id};
  }

  void wait(CommRequest& r) override {
    if (r.id < 0 || r.id >= next_id_) throw std::invalid_argument("wait: unknown or already completed request");
    auto it = recvs_.find(r.id);
    if (it != recvs_.end()) {
      const int tag = it->second.tag;
      recvs_.erase(it);
      r.id = -1;
      // Nothing else can ever send on a group of one, so waiting would only hang.
      throw CommTimeout("recv from world rank 0 (tag " + std::to_string(tag) + ") on group " + name_ +
                        " (world ranks 0) can never complete: no matching send was posted");
    }
    r.id = -1;
  }

  std::unique_ptr<Communicator> subgroup(const std::vector<int>& members, const std::string& name) override {
    if (members != std::vector<int>{0})
      throw std::invalid_argument("subgroup " + name + ": a local communicator only has rank 0; members must be {0}");
    return std::make_unique<LocalComm>(name, timeout_s_);
  }

 private:
  struct PendingRecv {
    void* buf;
    size_t bytes;
    int tag;
  };

  static void copy(void* dst, const void* src, int64_t count, CommType t) {
    if (count > 0 && dst != src) std::memmove(dst, src, static_cast<size_t>(count) * comm_type_size(t));
  }

  void check_peer(const char* op, int peer) const {
    if (peer != 0)
      throw std::invalid_argument(std::string(op) + ": rank " + std::to_string(peer) + " outside group " + name_ + " of size 1");
  }

  void deliver(const PendingRecv& r, const void* data, size_t bytes, int tag) const {
    if (bytes > r.bytes)
      throw std::runtime_error("recv (tag " + std::to_string(tag) + ") on group " + name_ + ": message of " +
                               std::to_string(bytes) + " bytes does not fit the " + std::to_string(r.bytes) + "-byte buffer");
    if (bytes > 0) std::memcpy(r.buf, data, bytes);
  }

  std::string name_;
  std::vector<int> world_ranks_{0};
  std::map<int, std::deque<std::vector<std::byte>>> queued_;  // sends not yet received, by tag
  std::map<int64_t, PendingRecv> recvs_;                      // receives not yet matched, by id
  int64_t next_id_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_local_comm() { return std::make_unique<LocalComm>("world", 600); }

}  // namespace sy
