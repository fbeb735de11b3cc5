// MpiComm: the Communicator over an MPI_Comm. Every operation that waits is posted as a
// non-blocking MPI call and polled against a deadline, so no rank can hang a job forever.
//
// To name the ranks that are missing when a collective times out, each collective is preceded
// by an "arrival" exchange on a private duplicate communicator: every rank sends its operation
// token (sequence number and op code) to every peer and posts a receive from every peer. The
// messages are tiny, so they go eagerly: a rank that never reaches the operation never sends,
// and at the deadline the receives still pending are exactly the ranks that did not arrive.
#include "parallel/comm_mpi.h"

#include <atomic>
#include <climits>
#include <functional>

#include "parallel/mpi_check.h"
#include "parallel/mpi_wait.h"

namespace sy {
namespace {

using detail::deadline_after;
using detail::poll;
using detail::rank_list;
using detail::seconds;
std::atomic<bool> g_timed_out{false};

constexpr int kSeqTags = 1 << 20;       // arrival tags cycle through [0, kSeqTags)
constexpr int kSubgroupTag = kSeqTags;  // arrivals of subgroup() calls (ordered per pair of ranks)

constexpr const char* kOpNames[] = {"?", "all_reduce", "reduce_scatter", "all_gather", "all_to_all_v", "broadcast", "barrier"};
enum Op : uint64_t { kAllReduce = 1, kReduceScatter, kAllGather, kAllToAllV, kBroadcast, kBarrier };

MPI_Datatype mpi_type(CommType t) {
  switch (t) {
    case CommType::F32: return MPI_FLOAT;
    case CommType::F64: return MPI_DOUBLE;
    case CommType::I32: return MPI_INT32_T;
    case CommType::I64: return MPI_INT64_T;
    case CommType::BF16: return MPI_UINT16_T;  // moved as its bits, never reduced (check_reduce)
  }
  throw std::invalid_argument("unknown CommType");
}

bool is_float(CommType t) { return t == CommType::F32 || t == CommType::F64; }

// MPI counts and displacements are int; a larger buffer must be split by the caller.
int int_count(const char* op, int64_t n) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative count " + std::to_string(n));
  if (n > INT_MAX)
    throw std::length_error(std::string(op) + ": " + std::to_string(n) +
                            " elements exceed MPI's int count limit (2147483647); split the buffer");
  return static_cast<int>(n);
}

MPI_Comm idup(MPI_Comm c, double timeout_s, const std::string& what) {
  MPI_Comm out = MPI_COMM_NULL;
  std::vector<MPI_Request> r(1);
  SY_MPI_CHECK(MPI_Comm_idup(c, &out, r.data()));
  if (!poll(r, deadline_after(timeout_s))) {
    g_timed_out = true;
    throw CommTimeout(what + " timed out after " + seconds(timeout_s) + " s: not every rank took part");
  }
  SY_MPI_CHECK(MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN));
  return out;
}

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, MPI_Comm arrive, std::string name, std::vector<int> world_ranks, double timeout_s)
      : comm_(comm), arrive_(arrive), name_(std::move(name)), world_ranks_(std::move(world_ranks)) {
    timeout_s_ = timeout_s;
    SY_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    SY_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }

  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    // After a timeout MPI may still be using the communicators; freeing them could hang.
    if (finalized || broken_) return;
    MPI_Comm_free(&arrive_);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }

  void all_reduce(void* buf, int64_t count, CommType t, ReduceOp op) override {
    const int n = int_count("all_reduce", count);
    check_reduce("all_reduce", t, op);
    collective(kAllReduce, [&](MPI_Request* r) {
      return MPI_Iallreduce(MPI_IN_PLACE, buf, n, mpi_type(t), op == ReduceOp::Max ? MPI_MAX : MPI_SUM, comm_, r);
    });
    if (op == ReduceOp::Avg) divide(buf, count, t);
    stats_.record("all_reduce", 2 * (size_ - 1) * count * static_cast<int64_t>(comm_type_size(t)) / size_);
  }

  void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommType t, ReduceOp op) override {
    const int n = int_count("reduce_scatter", recv_count);
    int_count("reduce_scatter", recv_count * size_);
    check_reduce("reduce_scatter", t, op);
    // send == recv means "my block ends up at the front of the same buffer", MPI's in-place form.
    const void* s = send == recv ? MPI_IN_PLACE : send;
    collective(kReduceScatter, [&](MPI_Request* r) {
      return MPI_Ireduce_scatter_block(s, recv, n, mpi_type(t), op == ReduceOp::Max ? MPI_MAX : MPI_SUM, comm_, r);
    });
    if (op == ReduceOp::Avg) divide(recv, recv_count, t);
    stats_.record("reduce_scatter", recv_count * static_cast<int64_t>(comm_type_size(t)) * (size_ - 1));
  }

  void all_gather(const void* send, void* recv, int64_t send_count, CommType t) override {
    const int n = int_count("all_gather", send_count);
    int_count("all_gather", send_count * size_);
    const size_t elem = comm_type_size(t);
    const bool in_place = send == static_cast<const char*>(recv) + rank_ * send_count * elem;
    collective(kAllGather, [&](MPI_Request* r) {
      return MPI_Iallgather(in_place ? MPI_IN_PLACE : send, n, mpi_type(t), recv, n, mpi_type(t), comm_, r);
    });
    stats_.record("all_gather", send_count * static_cast<int64_t>(elem) * (size_ - 1));
  }

  void all_to_all_v(const void* send, std::span<const int64_t> send_counts, void* recv,
                    std::span<const int64_t> recv_counts, CommType t) override {
    check_usable("all_to_all_v");
    if (send_counts.size() != static_cast<size_t>(size_) || recv_counts.size() != static_cast<size_t>(size_))
      throw std::invalid_argument("all_to_all_v on " + group() + ": expected " + std::to_string(size_) + " counts per buffer, got " +
                                  std::to_string(send_counts.size()) + " send and " + std::to_string(recv_counts.size()) + " recv");
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0, sent = 0;
    for (int p = 0; p < size_; ++p) {
      sc[p] = int_count("all_to_all_v", send_counts[p]);
      rc[p] = int_count("all_to_all_v", recv_counts[p]);
      sd[p] = int_count("all_to_all_v", so);
      rd[p] = int_count("all_to_all_v", ro);
      so += sc[p];
      ro += rc[p];
      if (p != rank_) sent += send_counts[p];
    }
    int_count("all_to_all_v", so);
    int_count("all_to_all_v", ro);
    collective(kAllToAllV, [&](MPI_Request* r) {
      return MPI_Ialltoallv(send, sc.data(), sd.data(), mpi_type(t), recv, rc.data(), rd.data(), mpi_type(t), comm_, r);
    });
    stats_.record("all_to_all_v", sent * static_cast<int64_t>(comm_type_size(t)));
  }

  void broadcast(void* buf, int64_t count, CommType t, int root) override {
    const int n = int_count("broadcast", count);
    check_peer("broadcast", root);
    collective(kBroadcast, [&](MPI_Request* r) { return MPI_Ibcast(buf, n, mpi_type(t), root, comm_, r); });
    stats_.record("broadcast", rank_ == root ? count * static_cast<int64_t>(comm_type_size(t)) * (size_ - 1) : 0);
  }

  void barrier() override {
    collective(kBarrier, [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
    stats_.record("barrier", 0);
  }

  CommRequest isend(const void* buf, int64_t count, CommType t, int peer, int tag) override {
    return post_p2p(true, const_cast<void*>(buf), count, t, peer, tag);
  }

  CommRequest irecv(void* buf, int64_t count, CommType t, int peer, int tag) override {
    return post_p2p(false, buf, count, t, peer, tag);
  }

  void wait(CommRequest& r) override {
    auto it = p2p_.find(r.id);
    if (it == p2p_.end()) throw std::invalid_argument("wait on " + group() + ": unknown or already completed request");
    const P2p p = it->second;
    p2p_.erase(it);
    r.id = -1;
    const Observed watched(observer_, p.is_send ? "send" : "recv", name_);
    std::vector<MPI_Request> reqs{p.req};
    if (poll(reqs, deadline_after(timeout_s_))) return;
    if (p.is_send) {
      mark_broken();  // a posted send cannot be reliably withdrawn
    } else {
      // Withdrawn, a late message cannot land in a buffer the caller has moved on from, and the
      // communicator stays usable.
      MPI_Status st;
      SY_MPI_CHECK(MPI_Cancel(&reqs[0]));
      SY_MPI_CHECK(MPI_Wait(&reqs[0], &st));
      int cancelled = 0;
      SY_MPI_CHECK(MPI_Test_cancelled(&st, &cancelled));
      if (!cancelled) return;  // the message landed just as we gave up
    }
    const std::string peer = "world rank " + std::to_string(world_ranks_[p.peer]);
    throw CommTimeout(std::string(p.is_send ? "send to " : "recv from ") + peer + " (tag " + std::to_string(p.tag) + ") on " +
                      group() + " timed out after " + seconds(timeout_s_) + " s: " + peer +
                      (p.is_send ? " did not receive" : " did not send"));
  }

  std::unique_ptr<Communicator> subgroup(const std::vector<int>& members, const std::string& name) override;

 private:
  struct P2p {
    MPI_Request req;
    bool is_send;
    int peer, tag;
  };

  std::string group() const { return "group " + name_ + " (world ranks " + rank_list(world_ranks_) + ")"; }

  void check_usable(const char* op) const {
    if (broken_) throw std::logic_error(std::string(op) + " on " + group() + ": the communicator is unusable after an earlier timeout");
  }
  void check_peer(const char* op, int peer) const {
    if (peer < 0 || peer >= size_)
      throw std::invalid_argument(std::string(op) + ": rank " + std::to_string(peer) + " outside " + group());
  }
  void check_reduce(const char* op, CommType t, ReduceOp r) const {
    if (t == CommType::BF16)
      throw std::invalid_argument(std::string(op) + " on " + group() + ": bfloat16 is moved, not reduced; reduce in float32");
    if (r == ReduceOp::Avg && !is_float(t))
      throw std::invalid_argument(std::string(op) + " on " + group() + ": ReduceOp::Avg needs a floating-point type; use Sum and divide");
  }
  void divide(void* buf, int64_t count, CommType t) const {
    if (t == CommType::F32)
      for (int64_t i = 0; i < count; ++i) static_cast<float*>(buf)[i] /= static_cast<float>(size_);
    else
      for (int64_t i = 0; i < count; ++i) static_cast<double*>(buf)[i] /= size_;
  }
  void mark_broken() {
    broken_ = true;
    g_timed_out = true;
  }

  CommRequest post_p2p(bool is_send, void* buf, int64_t count, CommType t, int peer, int tag) {
    const char* op = is_send ? "isend" : "irecv";
    check_usable(op);
    check_peer(op, peer);
    const int n = int_count(op, count);
    if (tag < 0) throw std::invalid_argument(std::string(op) + ": negative tag " + std::to_string(tag));
    MPI_Request req;
    if (is_send) {
      SY_MPI_CHECK(MPI_Isend(buf, n, mpi_type(t), peer, tag, comm_, &req));
      stats_.record("send", count * static_cast<int64_t>(comm_type_size(t)));
    } else {
      SY_MPI_CHECK(MPI_Irecv(buf, n, mpi_type(t), peer, tag, comm_, &req));
      stats_.record("recv", 0);
    }
    const int64_t id = next_id_++;
    p2p_.emplace(id, P2p{req, is_send, peer, tag});
    return CommRequest{id};
  }

  // Posts the arrival exchange and the operation, then polls both against one deadline.
  void collective(Op code, const std::function<int(MPI_Request*)>& start);

  MPI_Comm comm_, arrive_;
  int rank_ = 0, size_ = 1;
  std::string name_;
  std::vector<int> world_ranks_;
  uint64_t seq_ = 0;
  bool broken_ = false;
  std::map<int64_t, P2p> p2p_;
  int64_t next_id_ = 0;
};

void MpiComm::collective(Op code, const std::function<int(MPI_Request*)>& start) {
  const char* op = kOpNames[code];
  check_usable(op);
  const Observed watched(observer_, op, name_);
  const auto deadline = deadline_after(timeout_s_);
  const uint64_t seq = seq_++;
  const int tag = static_cast<int>(seq % kSeqTags);
  // Slot size_ holds the token this rank sends; slots [0, size_) what each peer sent. On the heap
  // so a timed-out exchange can be abandoned without MPI writing into freed memory.
  auto tokens = std::make_unique<uint64_t[]>(size_ + 1);
  tokens[size_] = seq << 8 | code;
  std::vector<MPI_Request> reqs(1, MPI_REQUEST_NULL);
  reqs.reserve(2 * size_ - 1);
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    reqs.emplace_back();
    SY_MPI_CHECK(MPI_Irecv(&tokens[p], 1, MPI_UINT64_T, p, tag, arrive_, &reqs.back()));
  }
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    reqs.emplace_back();
    SY_MPI_CHECK(MPI_Isend(&tokens[size_], 1, MPI_UINT64_T, p, tag, arrive_, &reqs.back()));
  }
  bool done = false;
  try {
    detail::mpi_check(start(&reqs[0]), op, __FILE__, __LINE__);
    done = poll(reqs, deadline);
  } catch (...) {  // the token exchange is in flight: leave it, as after a timeout
    mark_broken();
    tokens.release();
    throw;
  }

  // Which peers arrived, and did they arrive at the same operation?
  std::vector<int> missing;
  std::string wrong;
  for (int p = 0, k = 1; p < size_; ++p) {
    if (p == rank_) continue;
    int flag = 1;
    if (!done) {
      SY_MPI_CHECK(MPI_Test(&reqs[k], &flag, MPI_STATUS_IGNORE));
      if (!flag) MPI_Cancel(&reqs[k]);
    }
    ++k;
    if (!flag) {
      missing.push_back(world_ranks_[p]);
    } else if (tokens[p] != tokens[size_]) {
      const uint64_t their = tokens[p] & 0xff;
      wrong += "; world rank " + std::to_string(world_ranks_[p]) + " called " +
               (their < std::size(kOpNames) ? kOpNames[their] : "?") + " (operation #" + std::to_string(tokens[p] >> 8) + ")";
    }
  }
  if (done && wrong.empty()) return;
  if (done)  // the results are unreliable: the ranks paired different operations
    throw std::runtime_error(std::string(op) + " (operation #" + std::to_string(seq) + ") on " + group() +
                             ": ranks called different collectives" + wrong);
  mark_broken();
  tokens.release();  // intentionally leaked: MPI may still read or write it
  std::string msg = std::string(op) + " on " + group() + " timed out after " + seconds(timeout_s_) + " s: ";
  if (!missing.empty())
    msg += "world rank(s) " + rank_list(missing) + " did not arrive";
  else
    msg += "every rank arrived but the operation did not complete";
  throw CommTimeout(msg + wrong);
}

std::unique_ptr<Communicator> MpiComm::subgroup(const std::vector<int>& members, const std::string& name) {
  check_usable("subgroup");
  std::vector<bool> seen(size_);
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over the member list: all members must agree
  for (int m : members) {
    check_peer(("subgroup " + name).c_str(), m);
    if (seen[m]) throw std::invalid_argument("subgroup " + name + ": rank " + std::to_string(m) + " listed twice");
    seen[m] = true;
    hash = (hash ^ static_cast<uint64_t>(m)) * 1099511628211ull;
  }
  if (!seen[rank_]) throw std::invalid_argument("subgroup " + name + ": members must include this rank " + std::to_string(rank_));

  // MPI_Comm_create_group blocks until every member calls it, so first check, with a deadline,
  // that every member has arrived; only then make the blocking call.
  const int n = static_cast<int>(members.size());
  auto tokens = std::make_unique<uint64_t[]>(n + 1);
  tokens[n] = hash;
  std::vector<MPI_Request> reqs;
  for (int i = 0; i < n; ++i) {
    if (members[i] == rank_) continue;
    reqs.emplace_back();
    SY_MPI_CHECK(MPI_Irecv(&tokens[i], 1, MPI_UINT64_T, members[i], kSubgroupTag, arrive_, &reqs.back()));
    reqs.emplace_back();
    SY_MPI_CHECK(MPI_Isend(&tokens[n], 1, MPI_UINT64_T, members[i], kSubgroupTag, arrive_, &reqs.back()));
  }
  std::vector<int> sub_world(n);
  for (int i = 0; i < n; ++i) sub_world[i] = world_ranks_[members[i]];
  const std::string what = "subgroup " + name + " (world ranks " + rank_list(sub_world) + ") of " + group();
  if (!poll(reqs, deadline_after(timeout_s_))) {
    std::vector<int> missing;
    for (int i = 0, k = 0; i < n; ++i) {
      if (members[i] == rank_) continue;
      int flag = 0;
      SY_MPI_CHECK(MPI_Test(&reqs[k], &flag, MPI_STATUS_IGNORE));
      if (!flag) missing.push_back(sub_world[i]);
      k += 2;
    }
    mark_broken();
    tokens.release();  // intentionally leaked: MPI may still use it
    throw CommTimeout(what + " timed out after " + seconds(timeout_s_) + " s: world rank(s) " + rank_list(missing) + " did not arrive");
  }
  for (int i = 0; i < n; ++i)
    if (members[i] != rank_ && tokens[i] != hash)
      throw std::runtime_error(what + ": world rank " + std::to_string(sub_world[i]) + " passed a different member list");

  MPI_Group parent, sub;
  SY_MPI_CHECK(MPI_Comm_group(comm_, &parent));
  SY_MPI_CHECK(MPI_Group_incl(parent, n, members.data(), &sub));
  MPI_Comm comm = MPI_COMM_NULL;
  SY_MPI_CHECK(MPI_Comm_create_group(comm_, sub, 0, &comm));
  MPI_Group_free(&sub);
  MPI_Group_free(&parent);
  SY_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  MPI_Comm arrive = idup(comm, timeout_s_, "creating " + what);
  return std::make_unique<MpiComm>(comm, arrive, name, std::move(sub_world), timeout_s_);
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_world_comm(double timeout_s) {
  int init = 0;
  SY_MPI_CHECK(MPI_Initialized(&init));
  if (!init) {
    int provided = 0;
    SY_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
    if (provided < MPI_THREAD_SERIALIZED)
      throw std::runtime_error("MPI provides thread level " + std::to_string(provided) + ", below MPI_THREAD_SERIALIZED");
  }
  SY_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  int size = 0;
  SY_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  std::vector<int> ranks(size);
  for (int i = 0; i < size; ++i) ranks[i] = i;
  // A duplicate, not MPI_COMM_WORLD itself, so other MPI users in the process cannot match our tags.
  const std::string what = "creating group world (world ranks " + rank_list(ranks) + ")";
  MPI_Comm comm = idup(MPI_COMM_WORLD, timeout_s, what);
  MPI_Comm arrive = idup(MPI_COMM_WORLD, timeout_s, what);
  return std::make_unique<MpiComm>(comm, arrive, "world", std::move(ranks), timeout_s);
}

void mpi_finalize_if_initialised() {
  int init = 0, finalized = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&finalized);
  if (init && !finalized && !g_timed_out) MPI_Finalize();
}

bool mpi_timed_out() { return g_timed_out; }

}  // namespace sy
