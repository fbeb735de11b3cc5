// The single-process communicator: every operation against a hand-computed result. At size 1 the
// reductions are the identity, the gathers and scatters copies, and no bytes leave the rank.
#include <gtest/gtest.h>

#include <vector>

#include "parallel/comm.h"

namespace sy {
namespace {

TEST(CommLocal, IdentityAndTypes) {
  auto c = make_local_comm();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->name(), "world");
  EXPECT_EQ(c->world_ranks(), std::vector<int>{0});
  EXPECT_EQ(comm_type_size(CommType::F32), 4u);
  EXPECT_EQ(comm_type_size(CommType::F64), 8u);
  EXPECT_EQ(comm_type_size(CommType::I32), 4u);
  EXPECT_EQ(comm_type_size(CommType::I64), 8u);
  EXPECT_EQ(comm_type_of(DType::F32), CommType::F32);
  EXPECT_EQ(comm_type_of(DType::F64), CommType::F64);
  EXPECT_EQ(comm_type_of(DType::I32), CommType::I32);
}

TEST(CommLocal, AllReduceIsTheValue) {
  auto c = make_local_comm();
  std::vector<float> f{1.5f, -2.f, 3.25f};
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
    c->all_reduce(f.data(), 3, CommType::F32, op);
    EXPECT_EQ(f, (std::vector<float>{1.5f, -2.f, 3.25f}));
  }
  std::vector<double> d{0.1, 7.0};
  c->all_reduce(d.data(), 2, CommType::F64, ReduceOp::Avg);
  EXPECT_EQ(d, (std::vector<double>{0.1, 7.0}));
  std::vector<int64_t> l{int64_t{1} << 40, -3};
  c->all_reduce(l.data(), 2, CommType::I64, ReduceOp::Max);
  EXPECT_EQ(l, (std::vector<int64_t>{int64_t{1} << 40, -3}));
  std::vector<int32_t> i{4, 5};
  c->all_reduce(i.data(), 2, CommType::I32, ReduceOp::Sum);
  EXPECT_EQ(i, (std::vector<int32_t>{4, 5}));
  // Averaging integers would hide a rounding choice: refused at any size.
  EXPECT_THROW(c->all_reduce(i.data(), 2, CommType::I32, ReduceOp::Avg), std::invalid_argument);
  EXPECT_THROW(c->all_reduce(l.data(), 2, CommType::I64, ReduceOp::Avg), std::invalid_argument);
  c->all_reduce(nullptr, 0, CommType::F32, ReduceOp::Sum);
}

TEST(CommLocal, ScatterGatherAllToAllAreCopies) {
  auto c = make_local_comm();
  const std::vector<double> in{1, 2, 3, 4};
  std::vector<double> out(4, 0);
  c->reduce_scatter(in.data(), out.data(), 4, CommType::F64, ReduceOp::Avg);
  EXPECT_EQ(out, in);
  std::vector<int32_t> gi{9, 8, 7}, go(3, 0);
  c->all_gather(gi.data(), go.data(), 3, CommType::I32);
  EXPECT_EQ(go, gi);
  const int64_t counts[1] = {3};
  std::vector<int32_t> ao(3, 0);
  c->all_to_all_v(gi.data(), counts, ao.data(), counts, CommType::I32);
  EXPECT_EQ(ao, gi);
  const int64_t two[2] = {1, 1}, other[1] = {2};
  EXPECT_THROW(c->all_to_all_v(gi.data(), two, ao.data(), two, CommType::I32), std::invalid_argument);
  EXPECT_THROW(c->all_to_all_v(gi.data(), counts, ao.data(), other, CommType::I32), std::invalid_argument);
}

TEST(CommLocal, BroadcastAndBarrier) {
  auto c = make_local_comm();
  std::vector<float> b{3, 1, 4};
  c->broadcast(b.data(), 3, CommType::F32, 0);
  EXPECT_EQ(b, (std::vector<float>{3, 1, 4}));
  EXPECT_THROW(c->broadcast(b.data(), 3, CommType::F32, 1), std::invalid_argument);
  c->barrier();
}

TEST(CommLocal, SendToSelfMatchesByTag) {
  auto c = make_local_comm();
  // Receive posted before the send, and sends queued before their receives, both in tag order.
  std::vector<int64_t> r1(2, 0), r2(1, 0), r3(1, 0);
  CommRequest a = c->irecv(r1.data(), 2, CommType::I64, 0, 5);
  const int64_t s1[2] = {10, 11}, s2 = 20, s3 = 30;
  CommRequest b = c->isend(&s2, 1, CommType::I64, 0, 6);
  CommRequest d = c->isend(&s3, 1, CommType::I64, 0, 6);
  c->send(s1, 2, CommType::I64, 0, 5);
  c->wait(a);
  c->wait(b);
  c->wait(d);
  EXPECT_EQ(a.id, -1);
  EXPECT_EQ(r1, (std::vector<int64_t>{10, 11}));
  c->recv(r2.data(), 1, CommType::I64, 0, 6);
  c->recv(r3.data(), 1, CommType::I64, 0, 6);
  EXPECT_EQ(r2[0], 20);
  EXPECT_EQ(r3[0], 30);
  // Nobody else can ever send: waiting fails at once instead of hanging.
  CommRequest never = c->irecv(r2.data(), 1, CommType::I64, 0, 99);
  EXPECT_THROW(c->wait(never), CommTimeout);
  EXPECT_THROW(c->wait(never), std::invalid_argument);
  EXPECT_THROW(c->isend(&s2, 1, CommType::I64, 1, 0), std::invalid_argument);
}

TEST(CommLocal, ByteAccounting) {
  auto c = make_local_comm();
  std::vector<float> f(8, 1.f), g(8);
  c->all_reduce(f.data(), 8, CommType::F32, ReduceOp::Sum);
  c->all_gather(f.data(), g.data(), 8, CommType::F32);
  c->broadcast(f.data(), 8, CommType::F32, 0);
  // With one rank there are no peers: collectives send nothing; a send to self counts its payload.
  EXPECT_EQ(c->stats().bytes_sent, 0);
  c->send(f.data(), 8, CommType::F32, 0, 0);
  c->recv(g.data(), 8, CommType::F32, 0, 0);
  EXPECT_EQ(c->stats().bytes_sent, 32);
  EXPECT_EQ(c->stats().bytes_by_op.at("send"), 32);
  EXPECT_EQ(c->stats().calls_by_op.at("all_reduce"), 1);
  EXPECT_EQ(c->stats().calls_by_op.at("all_gather"), 1);
  EXPECT_EQ(c->stats().calls_by_op.at("broadcast"), 1);
  c->stats().reset();
  EXPECT_EQ(c->stats().bytes_sent, 0);
}

TEST(CommLocal, Subgroup) {
  auto c = make_local_comm();
  c->set_timeout_s(7);
  auto s = c->subgroup({0}, "dp");
  EXPECT_EQ(s->name(), "dp");
  EXPECT_EQ(s->size(), 1);
  EXPECT_EQ(s->timeout_s(), 7);
  double v = 2.5;
  s->all_reduce(&v, 1, CommType::F64, ReduceOp::Avg);
  EXPECT_EQ(v, 2.5);
  EXPECT_THROW(c->subgroup({0, 1}, "tp"), std::invalid_argument);
}

}  // namespace
}  // namespace sy
