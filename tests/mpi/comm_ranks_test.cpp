// Every MpiComm operation against a hand-computed result, on whatever number of ranks mpirun
// starts (ctest runs 1, 2, 3 and 4). Each rank runs the same tests; the expected values are
// closed forms or loops over ranks written independently of the communicator.
#include <gtest/gtest.h>

#include "mpi_gtest.h"

#include <cstdio>
#include <numeric>
#include <vector>

#include "parallel/comm_mpi.h"

namespace sy {
namespace {

Communicator* g_world = nullptr;
Communicator& W() { return *g_world; }

// Every test starts from zeroed counters so byte accounting can be checked exactly.
class Mpi : public ::testing::Test {
 protected:
  void SetUp() override { W().stats().reset(); }
  int n = W().size(), r = W().rank();
};

template <class T>
void check_all_reduce(CommType t) {
  Communicator& c = W();
  const int n = c.size(), r = c.rank();
  const int64_t k = 5;
  auto mine = [](int rank, int64_t i) { return static_cast<T>((rank + 1) * (i + 1)); };
  auto spread = [](int rank, int64_t i) { return static_cast<T>((rank * 7 + i * 3) % 5) - static_cast<T>(2); };
  std::vector<T> sum(k), mx(k), want_sum(k, 0), want_max(k);
  for (int64_t i = 0; i < k; ++i) {
    sum[i] = mine(r, i);
    mx[i] = spread(r, i);
    want_max[i] = spread(0, i);
    for (int s = 0; s < n; ++s) {
      want_sum[i] += mine(s, i);
      want_max[i] = std::max(want_max[i], spread(s, i));
    }
  }
  c.all_reduce(sum.data(), k, t, ReduceOp::Sum);
  c.all_reduce(mx.data(), k, t, ReduceOp::Max);
  EXPECT_EQ(sum, want_sum);
  EXPECT_EQ(mx, want_max);
  if constexpr (std::is_floating_point_v<T>) {
    std::vector<T> avg(k);
    for (int64_t i = 0; i < k; ++i) avg[i] = mine(r, i);
    c.all_reduce(avg.data(), k, t, ReduceOp::Avg);
    for (int64_t i = 0; i < k; ++i) EXPECT_EQ(avg[i], want_sum[i] / static_cast<T>(n)) << i;
  } else {
    EXPECT_THROW(c.all_reduce(sum.data(), k, t, ReduceOp::Avg), std::invalid_argument);
  }
}

TEST_F(Mpi, AllReduceEveryTypeAndOp) {
  check_all_reduce<float>(CommType::F32);
  check_all_reduce<double>(CommType::F64);
  check_all_reduce<int32_t>(CommType::I32);
  check_all_reduce<int64_t>(CommType::I64);
  // 2 (n-1)/n * count * elem per call: 3 float calls, 3 double, 2 of each integer type.
  auto per = [&](int64_t elem) { return 2 * (n - 1) * 5 * elem / n; };
  EXPECT_EQ(W().stats().bytes_by_op["all_reduce"], 3 * per(4) + 3 * per(8) + 2 * per(4) + 2 * per(8));
  EXPECT_EQ(W().stats().calls_by_op["all_reduce"], 10);
}

TEST_F(Mpi, ReduceScatter) {
  const int64_t k = 3;
  std::vector<double> send(n * k), recv(k), mx(k), avg(k);
  for (int b = 0; b < n; ++b)
    for (int64_t j = 0; j < k; ++j) send[b * k + j] = r * 100 + b * 10 + j;
  W().reduce_scatter(send.data(), recv.data(), k, CommType::F64, ReduceOp::Sum);
  W().reduce_scatter(send.data(), mx.data(), k, CommType::F64, ReduceOp::Max);
  W().reduce_scatter(send.data(), avg.data(), k, CommType::F64, ReduceOp::Avg);
  for (int64_t j = 0; j < k; ++j) {
    const double sum = 100.0 * n * (n - 1) / 2 + n * (r * 10 + j);
    EXPECT_EQ(recv[j], sum);
    EXPECT_EQ(mx[j], (n - 1) * 100 + r * 10 + j);
    EXPECT_DOUBLE_EQ(avg[j], sum / n);
  }
  std::vector<int32_t> si(n * 2), ri(2);
  for (int b = 0; b < n; ++b) si[b * 2] = si[b * 2 + 1] = b + r;
  W().reduce_scatter(si.data(), ri.data(), 2, CommType::I32, ReduceOp::Sum);
  EXPECT_EQ(ri[0], n * r + n * (n - 1) / 2);
  EXPECT_EQ(W().stats().bytes_by_op["reduce_scatter"], 3 * k * 8 * (n - 1) + 2 * 4 * (n - 1));
}

TEST_F(Mpi, AllGather) {
  const int64_t k = 3;
  std::vector<int64_t> send(k), recv(n * k, -1);
  for (int64_t j = 0; j < k; ++j) send[j] = r * 10 + j;
  W().all_gather(send.data(), recv.data(), k, CommType::I64);
  for (int b = 0; b < n; ++b)
    for (int64_t j = 0; j < k; ++j) EXPECT_EQ(recv[b * k + j], b * 10 + j);
  // In place: my block already sits in the output buffer.
  std::vector<float> inplace(n * 2, 0.f);
  inplace[r * 2] = static_cast<float>(r);
  inplace[r * 2 + 1] = 0.5f;
  W().all_gather(inplace.data() + r * 2, inplace.data(), 2, CommType::F32);
  for (int b = 0; b < n; ++b) {
    EXPECT_EQ(inplace[b * 2], static_cast<float>(b));
    EXPECT_EQ(inplace[b * 2 + 1], 0.5f);
  }
  EXPECT_EQ(W().stats().bytes_by_op["all_gather"], k * 8 * (n - 1) + 2 * 4 * (n - 1));
}

// Elements from rank s to rank d: rank 1 sends nothing at all, rank 0 nothing to rank 3, every
// other rank something to itself (which the byte count must leave out).
int64_t a2a_count(int s, int d) { return s == 1 ? 0 : (s + 2 * d) % 3 + (d == 0 ? s : 0) + (d == s ? 1 : 0); }

TEST_F(Mpi, AllToAllVUneven) {
  std::vector<int64_t> sc(n), rc(n);
  for (int p = 0; p < n; ++p) {
    sc[p] = a2a_count(r, p);
    rc[p] = a2a_count(p, r);
  }
  const int64_t stotal = std::accumulate(sc.begin(), sc.end(), int64_t{0});
  const int64_t rtotal = std::accumulate(rc.begin(), rc.end(), int64_t{0});
  std::vector<int32_t> send(stotal), recv(rtotal, -1);
  std::vector<float> sendf(stotal), recvf(rtotal, -1.f);
  for (int p = 0, o = 0; p < n; ++p)
    for (int64_t j = 0; j < sc[p]; ++j, ++o) {
      send[o] = r * 1000 + p * 100 + static_cast<int>(j);
      sendf[o] = static_cast<float>(send[o]) + 0.25f;
    }
  W().all_to_all_v(send.data(), sc, recv.data(), rc, CommType::I32);
  W().all_to_all_v(sendf.data(), sc, recvf.data(), rc, CommType::F32);
  for (int s = 0, o = 0; s < n; ++s)
    for (int64_t j = 0; j < rc[s]; ++j, ++o) {
      EXPECT_EQ(recv[o], s * 1000 + r * 100 + j) << "from " << s;
      EXPECT_EQ(recvf[o], static_cast<float>(s * 1000 + r * 100 + j) + 0.25f);
    }
  int64_t off_rank = 0;
  for (int p = 0; p < n; ++p)
    if (p != r) off_rank += sc[p];
  EXPECT_EQ(W().stats().bytes_by_op["all_to_all_v"], 2 * off_rank * 4);
  EXPECT_THROW(W().all_to_all_v(send.data(), std::span(sc).first(n - 1), recv.data(), rc, CommType::I32),
               std::invalid_argument);
}

TEST_F(Mpi, BroadcastFromLastRank) {
  const int root = n - 1;
  std::vector<double> b(4, -1.0);
  if (r == root)
    for (int j = 0; j < 4; ++j) b[j] = 0.5 * j + root;
  W().broadcast(b.data(), 4, CommType::F64, root);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(b[j], 0.5 * j + root);
  EXPECT_EQ(W().stats().bytes_by_op["broadcast"], r == root ? 4 * 8 * (n - 1) : 0);
  EXPECT_THROW(W().broadcast(b.data(), 4, CommType::F64, n), std::invalid_argument);
}

TEST_F(Mpi, RingSendRecv) {
  const int right = (r + 1) % n, left = (r + n - 1) % n;
  // Large enough to take MPI's rendezvous path, not only the eager one.
  const int64_t big = 1 << 18;
  std::vector<float> out(big), in(big, 0.f);
  for (int64_t i = 0; i < big; ++i) out[i] = static_cast<float>(r * 3 + i % 7);
  CommRequest rq = W().irecv(in.data(), big, CommType::F32, left, 4);
  CommRequest sq = W().isend(out.data(), big, CommType::F32, right, 4);
  W().wait(sq);
  W().wait(rq);
  for (int64_t i = 0; i < big; i += 997) ASSERT_EQ(in[i], static_cast<float>(left * 3 + i % 7)) << i;
  int64_t bytes = big * 4;
  if (n > 1) {
    // Blocking calls: even ranks send first and odd ranks receive first, so the ring cannot
    // deadlock even when the sends wait for their receivers.
    int64_t token = r, got = -1;
    if (r % 2 == 0) {
      W().send(&token, 1, CommType::I64, right, 9);
      W().recv(&got, 1, CommType::I64, left, 9);
    } else {
      W().recv(&got, 1, CommType::I64, left, 9);
      W().send(&token, 1, CommType::I64, right, 9);
    }
    EXPECT_EQ(got, left);
    bytes += 8;
  }
  EXPECT_EQ(W().stats().bytes_by_op["send"], bytes);
  EXPECT_EQ(W().stats().bytes_sent, bytes);
}

TEST_F(Mpi, BarrierAndZeroCounts) {
  W().barrier();
  W().all_reduce(nullptr, 0, CommType::F32, ReduceOp::Sum);
  W().broadcast(nullptr, 0, CommType::I32, 0);
  W().barrier();
  EXPECT_EQ(W().stats().calls_by_op["barrier"], 2);
  EXPECT_EQ(W().stats().bytes_sent, 0);
  EXPECT_THROW(W().all_reduce(nullptr, int64_t{1} << 31, CommType::F32, ReduceOp::Sum), std::length_error);
}

TEST_F(Mpi, EvenOddSubgroups) {
  std::vector<int> members;
  for (int p = r % 2; p < n; p += 2) members.push_back(p);
  auto sub = W().subgroup(members, r % 2 ? "odd" : "even");
  const int m = static_cast<int>(members.size());
  EXPECT_EQ(sub->name(), r % 2 ? "odd" : "even");
  EXPECT_EQ(sub->size(), m);
  EXPECT_EQ(sub->rank(), r / 2);
  EXPECT_EQ(sub->world_ranks(), members);
  EXPECT_EQ(sub->timeout_s(), W().timeout_s());

  int64_t v = r + 1, want = 0;
  for (int p : members) want += p + 1;
  sub->all_reduce(&v, 1, CommType::I64, ReduceOp::Sum);
  EXPECT_EQ(v, want);
  std::vector<int32_t> g(m, -1);
  const int32_t me = r;
  sub->all_gather(&me, g.data(), 1, CommType::I32);
  EXPECT_EQ(std::vector<int>(g.begin(), g.end()), members);
  float b = r == members.back() ? 42.f : 0.f;
  sub->broadcast(&b, 1, CommType::F32, m - 1);
  EXPECT_EQ(b, 42.f);
  sub->barrier();
  // Traffic is counted on the communicator that carried it.
  EXPECT_EQ(sub->stats().bytes_by_op["all_gather"], 4 * (m - 1));
  EXPECT_EQ(W().stats().bytes_sent, 0);

  // A group of one inside the subgroup, then the world is still usable alongside it.
  auto self = sub->subgroup({sub->rank()}, "self");
  EXPECT_EQ(self->world_ranks(), std::vector<int>{r});
  double d = 3.0;
  self->all_reduce(&d, 1, CommType::F64, ReduceOp::Avg);
  EXPECT_EQ(d, 3.0);
  int64_t all = 1;
  W().all_reduce(&all, 1, CommType::I64, ReduceOp::Sum);
  EXPECT_EQ(all, n);
  EXPECT_THROW(W().subgroup({r, n}, "x"), std::invalid_argument);
  if (n > 1) {
    EXPECT_THROW(W().subgroup({(r + 1) % n}, "x"), std::invalid_argument);
  }
}

TEST_F(Mpi, RecvTimeoutNamesThePeerAndIsRecoverable) {
  auto self = W().subgroup({r}, "self");
  self->set_timeout_s(0.3);
  int32_t x = 0;
  CommRequest q = self->irecv(&x, 1, CommType::I32, 0, 1);
  try {
    self->wait(q);
    ADD_FAILURE() << "no timeout";
  } catch (const CommTimeout& e) {
    const std::string want = "recv from world rank " + std::to_string(r) + " (tag 1) on group self (world ranks " +
                             std::to_string(r) + ") timed out after 0.3 s: world rank " + std::to_string(r) + " did not send";
    EXPECT_EQ(e.what(), want);
  }
  // The receive was withdrawn, so the communicator still works.
  const int32_t y = 5;
  self->send(&y, 1, CommType::I32, 0, 1);
  self->recv(&x, 1, CommType::I32, 0, 1);
  EXPECT_EQ(x, 5);
  EXPECT_FALSE(mpi_timed_out());
}


}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int rc = 1;
  {
    auto world = sy::make_mpi_world_comm(30);
    sy::g_world = world.get();
    rc = sy::run_tests_on_ranks(*world);
  }
  sy::mpi_finalize_if_initialised();
  return rc;
}
