// Every NcclComm operation on device buffers against a hand-computed result, on whatever number
// of ranks mpirun starts: the checks of comm_ranks_test.cpp (the MPI communicator's) plus the
// asynchronous path and a timeout. Built twice: against the emulator (sy_mpi_nccl_tests, ctest
// mpi_nccl_np1..4: the emulated NCCL over MPI) and against CUDA and NCCL (sy_mpi_nccl_gpu_tests,
// one GPU per rank). Ranks other than 0 print only their failures.
#include <gtest/gtest.h>

#include "mpi_gtest.h"

#include <cstdio>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/cuda/device_buffer.h"
#include "parallel/comm_mpi.h"
#include "parallel/nccl/comm_nccl.h"

namespace sy {
namespace {

using cuda::DeviceBuffer;
using nccl::NcclComm;

Communicator* g_mpi = nullptr;
NcclComm* g_world = nullptr;
NcclComm& W() { return *g_world; }

// Device copies of host vectors; a buffer of n elements poisoned with `fill`.
template <class T> DeviceBuffer<T> dev(const std::vector<T>& v) { return DeviceBuffer<T>(v); }
template <class T> DeviceBuffer<T> dev(size_t n, T fill) { return DeviceBuffer<T>(std::vector<T>(n, fill)); }

// Every test starts from zeroed counters so byte accounting can be checked exactly.
class Nccl : public ::testing::Test {
 protected:
  void SetUp() override { W().stats().reset(); }
  int n = W().size(), r = W().rank();
};

template <class T> void expect_avg(const std::vector<T>& got, const std::vector<T>& want) {
  // NCCL may average by pre-multiplying with 1/n, so the last bit can differ from sum / n.
  for (size_t i = 0; i < got.size(); ++i) {
    if constexpr (std::is_same_v<T, float>)
      EXPECT_FLOAT_EQ(got[i], want[i]) << i;
    else
      EXPECT_DOUBLE_EQ(got[i], want[i]) << i;
  }
}

template <class T> void check_all_reduce(CommType t) {
  NcclComm& c = W();
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
  auto dsum = dev(sum), dmx = dev(mx);
  c.all_reduce(dsum.get(), k, t, ReduceOp::Sum);
  c.all_reduce(dmx.get(), k, t, ReduceOp::Max);
  EXPECT_EQ(dsum.download(), want_sum);
  EXPECT_EQ(dmx.download(), want_max);
  if constexpr (std::is_floating_point_v<T>) {
    std::vector<T> avg(k), want(k);
    for (int64_t i = 0; i < k; ++i) {
      avg[i] = mine(r, i);
      want[i] = want_sum[i] / static_cast<T>(n);
    }
    auto davg = dev(avg);
    c.all_reduce(davg.get(), k, t, ReduceOp::Avg);
    expect_avg(davg.download(), want);
  } else {
    EXPECT_THROW(c.all_reduce(dsum.get(), k, t, ReduceOp::Avg), std::invalid_argument);
  }
}

TEST_F(Nccl, AllReduceEveryTypeAndOp) {
  check_all_reduce<float>(CommType::F32);
  check_all_reduce<double>(CommType::F64);
  check_all_reduce<int32_t>(CommType::I32);
  check_all_reduce<int64_t>(CommType::I64);
  // 2 (n-1)/n * count * elem per call: 3 float calls, 3 double, 2 of each integer type.
  auto per = [&](int64_t elem) { return 2 * (n - 1) * 5 * elem / n; };
  EXPECT_EQ(W().stats().bytes_by_op["all_reduce"], 3 * per(4) + 3 * per(8) + 2 * per(4) + 2 * per(8));
  EXPECT_EQ(W().stats().calls_by_op["all_reduce"], 10);
}

TEST_F(Nccl, ReduceScatterAlsoInPlace) {
  const int64_t k = 3;
  std::vector<double> send(n * k);
  for (int b = 0; b < n; ++b)
    for (int64_t j = 0; j < k; ++j) send[b * k + j] = r * 100 + b * 10 + j;
  auto ds = dev(send), dsum = dev<double>(k, -1), dmx = dev<double>(k, -1), davg = dev<double>(k, -1);
  W().reduce_scatter(ds.get(), dsum.get(), k, CommType::F64, ReduceOp::Sum);
  W().reduce_scatter(ds.get(), dmx.get(), k, CommType::F64, ReduceOp::Max);
  W().reduce_scatter(ds.get(), davg.get(), k, CommType::F64, ReduceOp::Avg);
  std::vector<double> want(k), want_max(k), want_avg(k);
  for (int64_t j = 0; j < k; ++j) {
    want[j] = 100.0 * n * (n - 1) / 2 + n * (r * 10 + j);
    want_max[j] = (n - 1) * 100 + r * 10 + j;
    want_avg[j] = want[j] / n;
  }
  EXPECT_EQ(dsum.download(), want);
  EXPECT_EQ(dmx.download(), want_max);
  expect_avg(davg.download(), want_avg);
  // send == recv: my block's result lands at the front of the buffer.
  auto inplace = dev(send);
  W().reduce_scatter(inplace.get(), inplace.get(), k, CommType::F64, ReduceOp::Sum);
  const std::vector<double> front = inplace.download();
  EXPECT_EQ(std::vector<double>(front.begin(), front.begin() + k), want);
  std::vector<int32_t> si(n * 2);
  for (int b = 0; b < n; ++b) si[b * 2] = si[b * 2 + 1] = b + r;
  auto dsi = dev(si), dri = dev<int32_t>(2, -1);
  W().reduce_scatter(dsi.get(), dri.get(), 2, CommType::I32, ReduceOp::Sum);
  EXPECT_EQ(dri.download()[0], n * r + n * (n - 1) / 2);
  EXPECT_EQ(W().stats().bytes_by_op["reduce_scatter"], 4 * k * 8 * (n - 1) + 2 * 4 * (n - 1));
}

TEST_F(Nccl, AllGatherAlsoInPlace) {
  const int64_t k = 3;
  std::vector<int64_t> send(k), want(n * k);
  for (int64_t j = 0; j < k; ++j) send[j] = r * 10 + j;
  for (int b = 0; b < n; ++b)
    for (int64_t j = 0; j < k; ++j) want[b * k + j] = b * 10 + j;
  auto ds = dev(send), dr = dev<int64_t>(n * k, -1);
  W().all_gather(ds.get(), dr.get(), k, CommType::I64);
  EXPECT_EQ(dr.download(), want);
  std::vector<float> inplace(n * 2, 0.f), want_f(n * 2);
  inplace[r * 2] = static_cast<float>(r);
  inplace[r * 2 + 1] = 0.5f;
  for (int b = 0; b < n; ++b) {
    want_f[b * 2] = static_cast<float>(b);
    want_f[b * 2 + 1] = 0.5f;
  }
  auto di = dev(inplace);
  W().all_gather(di.get() + r * 2, di.get(), 2, CommType::F32);
  EXPECT_EQ(di.download(), want_f);
  EXPECT_EQ(W().stats().bytes_by_op["all_gather"], k * 8 * (n - 1) + 2 * 4 * (n - 1));
}

// Elements from rank s to rank d: rank 1 sends nothing at all, rank 0 nothing to rank 3, every
// other rank something to itself (which the byte count must leave out).
int64_t a2a_count(int s, int d) { return s == 1 ? 0 : (s + 2 * d) % 3 + (d == 0 ? s : 0) + (d == s ? 1 : 0); }

TEST_F(Nccl, AllToAllVUneven) {
  std::vector<int64_t> sc(n), rc(n);
  for (int p = 0; p < n; ++p) {
    sc[p] = a2a_count(r, p);
    rc[p] = a2a_count(p, r);
  }
  const int64_t stotal = std::accumulate(sc.begin(), sc.end(), int64_t{0});
  const int64_t rtotal = std::accumulate(rc.begin(), rc.end(), int64_t{0});
  std::vector<int32_t> send(stotal), want(rtotal);
  std::vector<float> sendf(stotal), wantf(rtotal);
  for (int p = 0, o = 0; p < n; ++p)
    for (int64_t j = 0; j < sc[p]; ++j, ++o) {
      send[o] = r * 1000 + p * 100 + static_cast<int>(j);
      sendf[o] = static_cast<float>(send[o]) + 0.25f;
    }
  for (int s = 0, o = 0; s < n; ++s)
    for (int64_t j = 0; j < rc[s]; ++j, ++o) {
      want[o] = s * 1000 + r * 100 + static_cast<int>(j);
      wantf[o] = static_cast<float>(want[o]) + 0.25f;
    }
  // One spare element each, so that no buffer is empty (a 0-byte DeviceBuffer has no pointer).
  auto ds = dev<int32_t>(stotal + 1, 0), dr = dev<int32_t>(rtotal + 1, -1);
  auto dsf = dev<float>(stotal + 1, 0.f), drf = dev<float>(rtotal + 1, -1.f);
  send.push_back(0);
  sendf.push_back(0.f);
  ds.upload(send);
  dsf.upload(sendf);
  W().all_to_all_v(ds.get(), sc, dr.get(), rc, CommType::I32);
  W().all_to_all_v(dsf.get(), sc, drf.get(), rc, CommType::F32);
  want.push_back(-1);
  wantf.push_back(-1.f);
  EXPECT_EQ(dr.download(), want);
  EXPECT_EQ(drf.download(), wantf);
  int64_t off_rank = 0;
  for (int p = 0; p < n; ++p)
    if (p != r) off_rank += sc[p];
  EXPECT_EQ(W().stats().bytes_by_op["all_to_all_v"], 2 * off_rank * 4);
  EXPECT_THROW(W().all_to_all_v(ds.get(), std::span(sc).first(n - 1), dr.get(), rc, CommType::I32), std::invalid_argument);
}

TEST_F(Nccl, BroadcastFromLastRank) {
  const int root = n - 1;
  std::vector<double> b(4, -1.0), want(4);
  for (int j = 0; j < 4; ++j) want[j] = 0.5 * j + root;
  auto db = dev(r == root ? want : b);
  W().broadcast(db.get(), 4, CommType::F64, root);
  EXPECT_EQ(db.download(), want);
  EXPECT_EQ(W().stats().bytes_by_op["broadcast"], r == root ? 4 * 8 * (n - 1) : 0);
  EXPECT_THROW(W().broadcast(db.get(), 4, CommType::F64, n), std::invalid_argument);
}

TEST_F(Nccl, RingSendRecv) {
  const int right = (r + 1) % n, left = (r + n - 1) % n;
  const int64_t big = 1 << 18;  // 1 MiB: MPI's rendezvous path under the emulator
  std::vector<float> out(big);
  for (int64_t i = 0; i < big; ++i) out[i] = static_cast<float>(r * 3 + i % 7);
  auto dout = dev(out), din = dev<float>(big, 0.f);
  CommRequest rq = W().irecv(din.get(), big, CommType::F32, left, 4);
  CommRequest sq = W().isend(dout.get(), big, CommType::F32, right, 4);
  W().wait(sq);
  W().wait(rq);
  const std::vector<float> in = din.download();
  for (int64_t i = 0; i < big; i += 997) ASSERT_EQ(in[i], static_cast<float>(left * 3 + i % 7)) << i;
  int64_t bytes = big * 4;
  if (n > 1) {
    // Blocking calls, even ranks sending first: each starts alone, so the ring cannot deadlock.
    auto token = dev<int64_t>(1, r), got = dev<int64_t>(1, -1);
    if (r % 2 == 0) {
      W().send(token.get(), 1, CommType::I64, right, 9);
      W().recv(got.get(), 1, CommType::I64, left, 9);
    } else {
      W().recv(got.get(), 1, CommType::I64, left, 9);
      W().send(token.get(), 1, CommType::I64, right, 9);
    }
    EXPECT_EQ(got.download()[0], left);
    bytes += 8;
  }
  EXPECT_EQ(W().stats().bytes_by_op["send"], bytes);
  EXPECT_EQ(W().stats().bytes_sent, bytes);
}

TEST_F(Nccl, BarrierAndZeroCounts) {
  W().barrier();
  W().all_reduce(nullptr, 0, CommType::F32, ReduceOp::Sum);
  W().broadcast(nullptr, 0, CommType::I32, 0);
  W().barrier();
  EXPECT_EQ(W().stats().calls_by_op["barrier"], 2);
  EXPECT_EQ(W().stats().bytes_sent, 0);
  EXPECT_THROW(W().all_reduce(nullptr, -1, CommType::F32, ReduceOp::Sum), std::invalid_argument);
}

TEST_F(Nccl, EvenOddSubgroups) {
  std::vector<int> members;
  for (int p = r % 2; p < n; p += 2) members.push_back(p);
  auto sub = W().nccl_subgroup(members, r % 2 ? "odd" : "even");
  const int m = static_cast<int>(members.size());
  EXPECT_EQ(sub->name(), r % 2 ? "odd" : "even");
  EXPECT_EQ(sub->size(), m);
  EXPECT_EQ(sub->rank(), r / 2);
  EXPECT_EQ(sub->world_ranks(), members);
  EXPECT_EQ(sub->timeout_s(), W().timeout_s());
  EXPECT_EQ(sub->device(), W().device());

  int64_t want = 0;
  for (int p : members) want += p + 1;
  auto v = dev<int64_t>(1, r + 1);
  sub->all_reduce(v.get(), 1, CommType::I64, ReduceOp::Sum);
  EXPECT_EQ(v.download()[0], want);
  auto me = dev<int32_t>(1, r), g = dev<int32_t>(m, -1);
  sub->all_gather(me.get(), g.get(), 1, CommType::I32);
  const std::vector<int32_t> gathered = g.download();
  EXPECT_EQ(std::vector<int>(gathered.begin(), gathered.end()), members);
  auto b = dev<float>(1, r == members.back() ? 42.f : 0.f);
  sub->broadcast(b.get(), 1, CommType::F32, m - 1);
  EXPECT_EQ(b.download()[0], 42.f);
  sub->barrier();
  EXPECT_EQ(sub->stats().bytes_by_op["all_gather"], 4 * (m - 1));
  EXPECT_EQ(W().stats().bytes_sent, 0);  // traffic is counted on the communicator that carried it

  // A group of one inside the subgroup (through the plain Communicator interface), then the world.
  std::unique_ptr<Communicator> self = sub->subgroup({sub->rank()}, "self");
  EXPECT_EQ(self->world_ranks(), std::vector<int>{r});
  auto d = dev<double>(1, 3.0);
  self->all_reduce(d.get(), 1, CommType::F64, ReduceOp::Avg);
  EXPECT_EQ(d.download()[0], 3.0);
  auto all = dev<int64_t>(1, 1);
  W().all_reduce(all.get(), 1, CommType::I64, ReduceOp::Sum);
  EXPECT_EQ(all.download()[0], n);
  EXPECT_THROW(W().subgroup({r, n}, "x"), std::invalid_argument);
  if (n > 1) {
    EXPECT_THROW(W().subgroup({(r + 1) % n}, "x"), std::invalid_argument);
  }
}

struct Recorder : CommObserver {
  std::vector<std::string> log;
  void enter(const char* op, const std::string& group) override { log.push_back(std::string(op) + "@" + group); }
  void leave() override { log.push_back("leave"); }
};

// The enqueue and the wait of every operation are bracketed (the wait is where a hang shows).
TEST_F(Nccl, ObserverBracketsEnqueueAndWait) {
  Recorder rec;
  W().set_observer(&rec);
  auto x = dev<float>(2, 1.f);
  W().all_reduce(x.get(), 2, CommType::F32, ReduceOp::Sum);
  CommRequest q = W().all_reduce_async(x.get(), 2, CommType::F32, ReduceOp::Sum);
  W().wait(q);
  W().set_observer(nullptr);
  const std::vector<std::string> pair{"all_reduce@world", "leave"};
  std::vector<std::string> want;
  for (int i = 0; i < 4; ++i) want.insert(want.end(), pair.begin(), pair.end());
  EXPECT_EQ(rec.log, want);
  EXPECT_EQ(x.download(), std::vector<float>(2, static_cast<float>(n * n)));
}

// The overlap pattern: each layer's gradients are produced on the compute stream, their all-reduce
// enqueued at once, and the next layer's gradients produced while it runs; the results are
// consumed on the compute stream after it waited on the device, then the host waits.
TEST_F(Nccl, AsyncAllReducesOverlapTheComputeStream) {
  cudaStream_t compute = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
  cudaStream_t before = W().compute_stream();
  W().set_compute_stream(compute);
  const int layers = 4;
  const int64_t k = 1000;
  std::vector<std::vector<float>> host(layers, std::vector<float>(k)), result(layers, std::vector<float>(k, -1.f));
  std::vector<DeviceBuffer<float>> grads;
  std::vector<CommRequest> reqs;
  for (int l = layers - 1; l >= 0; --l) {  // backward: the last layer first
    for (int64_t i = 0; i < k; ++i) host[l][i] = static_cast<float>((r + 1) * (l + 1) + i % 13);
    grads.emplace_back(k);
    // "The backward of layer l" writes its gradient on the compute stream...
    ASSERT_EQ(cudaMemcpyAsync(grads.back().get(), host[l].data(), k * 4, cudaMemcpyHostToDevice, compute), cudaSuccess);
    // ...and its reduction is enqueued behind it, on the communication stream.
    reqs.push_back(W().all_reduce_async(grads.back().get(), k, CommType::F32, ReduceOp::Sum));
  }
  for (int j = 0; j < layers; ++j) {
    const int l = layers - 1 - j;
    W().stream_wait(reqs[j]);  // the compute stream, not the host, waits for layer l's reduction
    ASSERT_EQ(cudaMemcpyAsync(result[l].data(), grads[j].get(), k * 4, cudaMemcpyDeviceToHost, compute), cudaSuccess);
  }
  ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
  for (CommRequest& q : reqs) {
    EXPECT_TRUE(W().test(q));
    W().wait(q);
    EXPECT_EQ(q.id, -1);
  }
  for (int l = 0; l < layers; ++l)
    for (int64_t i = 0; i < k; i += 37) {
      float want = 0;
      for (int s = 0; s < n; ++s) want += static_cast<float>((s + 1) * (l + 1) + i % 13);
      ASSERT_EQ(result[l][i], want) << "layer " << l << " element " << i;
    }
  EXPECT_EQ(W().stats().calls_by_op["all_reduce"], layers);
  EXPECT_EQ(W().stats().bytes_by_op["all_reduce"], layers * (2 * (n - 1) * k * 4 / n));
  EXPECT_THROW(W().wait(reqs[0]), std::invalid_argument);  // each request is waited once

  // The other async forms, waited on the host.
  auto ds = dev<int32_t>(n, r), dg = dev<int32_t>(n, -1), dr = dev<int32_t>(1, -1), db = dev<int32_t>(3, r);
  std::vector<int64_t> ones(n, 1);
  CommRequest a = W().all_gather_async(ds.get() + r, dg.get(), 1, CommType::I32);
  CommRequest b = W().reduce_scatter_async(ds.get(), dr.get(), 1, CommType::I32, ReduceOp::Max);
  CommRequest c = W().broadcast_async(db.get(), 3, CommType::I32, 0);
  auto dx = dev<int32_t>(n, -1);
  CommRequest e = W().all_to_all_v_async(ds.get(), ones, dx.get(), ones, CommType::I32);
  W().wait(e);
  W().wait(c);
  W().wait(b);
  W().wait(a);
  std::vector<int32_t> ranks(n);
  std::iota(ranks.begin(), ranks.end(), 0);
  EXPECT_EQ(dg.download(), ranks);
  EXPECT_EQ(dr.download()[0], n - 1);
  EXPECT_EQ(db.download(), std::vector<int32_t>(3, 0));
  EXPECT_EQ(dx.download(), ranks);
  W().set_compute_stream(before);
  cudaStreamDestroy(compute);
}

#if SY_CUDA_EMULATED
// The emulated NCCL refuses what the real one cannot use: host memory.
TEST_F(Nccl, EmulatedNcclRefusesHostPointers) {
  std::vector<float> host(4, 1.f);
  try {
    W().all_reduce(host.data(), 4, CommType::F32, ReduceOp::Sum);
    ADD_FAILURE() << "a host pointer was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is not device memory"), std::string::npos) << e.what();
  }
  auto still = dev<int32_t>(1, 1);
  W().all_reduce(still.get(), 1, CommType::I32, ReduceOp::Sum);
  EXPECT_EQ(still.download()[0], n);
}

// An operation ordered behind work that never finishes (the compute stream, stalled here by hand
// as the emulated NCCL stalls the stream of a collective whose peers never came) is not done: the
// stall reaches the communication stream through the ready event, test() says not done, and the
// wait times out and aborts the communicator.
TEST_F(Nccl, WaitBehindStuckWorkTimesOutAndAborts) {
  auto self = W().nccl_subgroup({r}, "self");
  self->set_timeout_s(0.3);
  cudaStream_t compute = nullptr;
  ASSERT_EQ(cudaStreamCreate(&compute), cudaSuccess);
  self->set_compute_stream(compute);
  const syemu::StallHandle stuck = syemu::stall_stream(compute);
  auto x = dev<float>(4, 1.f);
  CommRequest q = self->all_reduce_async(x.get(), 4, CommType::F32, ReduceOp::Sum);
  EXPECT_FALSE(self->test(q));
  try {
    self->wait(q);
    ADD_FAILURE() << "no timeout";
  } catch (const CommTimeout& e) {
    const std::string want = "all_reduce on group self (world ranks " + std::to_string(r) +
                             ") timed out after 0.3 s: it did not complete: a rank did not arrive, or an earlier "
                             "operation on the communication stream is stuck";
    EXPECT_EQ(e.what(), want);
  }
  EXPECT_THROW(self->all_reduce(x.get(), 4, CommType::F32, ReduceOp::Sum), std::logic_error);
  EXPECT_THROW(cudaStreamSynchronize(compute), syemu::EmuError);  // it would hang on a GPU
  syemu::end_stall(stuck);
  EXPECT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
  self.reset();
  cudaStreamDestroy(compute);
}
#endif

// Rank 0 waits for a message the last rank never sends: CommTimeout naming the peer, the NCCL
// communicator is aborted and refuses further use; MPI stays clean for the rest of the program.
TEST_F(Nccl, RecvTimeoutNamesThePeerAndAbortsTheCommunicator) {
  std::vector<int> everyone(n);
  std::iota(everyone.begin(), everyone.end(), 0);
  auto victim = W().nccl_subgroup(everyone, "victim");
  victim->set_timeout_s(0.5);
  if (r == 0) {
    const int peer = n - 1;
    auto x = dev<int32_t>(1, 0);
    CommRequest q = victim->irecv(x.get(), 1, CommType::I32, peer, 1);
    try {
      victim->wait(q);
      ADD_FAILURE() << "no timeout";
    } catch (const CommTimeout& e) {
      std::string ranks = "0";
      for (int p = 1; p < n; ++p) ranks += "," + std::to_string(p);
      const std::string want = "recv from world rank " + std::to_string(peer) + " (tag 1) on group victim (world ranks " + ranks +
                               ") timed out after 0.5 s: world rank " + std::to_string(peer) + " did not send";
      const std::string got = e.what();
      EXPECT_EQ(got.substr(0, want.size()), want) << got;
    }
    EXPECT_THROW(victim->barrier(), std::logic_error);
  }
  g_mpi->barrier();  // the others wait on the host communicator until rank 0 has timed out
  EXPECT_FALSE(mpi_timed_out());
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int rc = 1;
  {
    auto mpi = sy::make_mpi_world_comm(60);
    try {
      auto world = sy::nccl::make_nccl_comm(*mpi);
      sy::g_mpi = mpi.get();
      sy::g_world = world.get();
      rc = sy::run_tests_on_ranks(*mpi);
    } catch (const std::exception& e) {  // no device, too few GPUs, NCCL set-up failed
      std::fprintf(stderr, "rank %d: %s\n", mpi->rank(), e.what());
    }
  }
  sy::mpi_finalize_if_initialised();
  return rc;
}
