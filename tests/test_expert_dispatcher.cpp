// The expert-parallel dispatcher on its own: n ranks simulated by threads that share an
// in-memory TokenExchange. Dispatch then combine must return every row exactly (each phase is a
// permutation), with uneven loads, empty experts and a rank that sends nothing; the rows a rank's
// experts receive must be exactly the rows routed to them.
#include <gtest/gtest.h>

#include <barrier>
#include <thread>

#include "engine/layers/expert_dispatcher.h"

namespace sy {
namespace {

// All ranks post their send buffers, wait, read what is addressed to them, wait again.
class ThreadExchange {
 public:
  explicit ThreadExchange(int n) : n_(n), sync_(n), posted_(n) {}
  struct Rank final : TokenExchange {
    Rank(ThreadExchange* group, int r) : g(group), me(r) {}
    ThreadExchange* g;
    int me;
    int n_ranks() const override { return g->n_; }
    int rank() const override { return me; }
    std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send, int64_t per) override {
      g->posted_[me] = {send.begin(), send.end()};
      g->sync_.arrive_and_wait();
      std::vector<int64_t> recv;
      for (int q = 0; q < g->n_; ++q)
        for (int64_t i = 0; i < per; ++i) recv.push_back(int64_t(g->posted_[q][me * per + i]));
      g->sync_.arrive_and_wait();
      return recv;
    }
    void exchange_rows(const Tensor& send, std::span<const int64_t> sc, const Tensor& recv,
                       std::span<const int64_t> rc) override {
      const int64_t d = send.dim(1);
      const float* s = send.numel() ? send.data<float>() : nullptr;
      std::vector<double> mine(s, s + send.numel());
      std::vector<double> header(sc.begin(), sc.end());
      header.insert(header.end(), mine.begin(), mine.end());
      g->posted_[me] = header;
      g->sync_.arrive_and_wait();
      float* out = recv.numel() ? recv.data<float>() : nullptr;
      for (int q = 0; q < g->n_; ++q) {
        const auto& p = g->posted_[q];
        int64_t off = 0;
        for (int t = 0; t < me; ++t) off += int64_t(p[t]);
        EXPECT_EQ(int64_t(p[me]), rc[q]);
        for (int64_t i = 0; i < rc[q] * d; ++i) *out++ = float(p[g->n_ + off * d + i]);
      }
      g->sync_.arrive_and_wait();
    }
  };
  Rank rank(int r) { return Rank(this, r); }

 private:
  int n_;
  std::barrier<> sync_;
  std::vector<std::vector<double>> posted_;
};

void round_trip(int n, int64_t experts, ExpertOrder order) {
  ThreadExchange g(n);
  const int64_t local = experts / n, d = 3;
  std::vector<double> lhs(n, 0.0), rhs(n, 0.0);
  std::vector<std::thread> threads;
  for (int me = 0; me < n; ++me)
    threads.emplace_back([&, me] {
      auto be = make_cpu_backend();
      auto ex = g.rank(me);
      ExpertDispatcher disp(ex, experts, me * local, local, order);
      // Uneven loads: rank me sends (e + me) % 3 rows to expert e, none at all from the last rank;
      // expert 1 never gets a row. Each row is tagged (source rank, expert, index).
      std::vector<int64_t> offsets{0};
      std::vector<float> rows;
      for (int64_t e = 0; e < experts; ++e) {
        const int64_t c = (me == n - 1 || e == 1) ? 0 : (e + me) % 3;
        for (int64_t i = 0; i < c; ++i) rows.insert(rows.end(), {float(me), float(e), float(i)});
        offsets.push_back(offsets.back() + c);
      }
      const int64_t m = offsets.back();
      Tensor xp = be->empty({std::max<int64_t>(m, 1), d}, DType::F32).rows(0, m);
      if (m) be->upload(rows.data(), xp);
      disp.plan(*be, offsets, DType::F32, d);
      const int64_t r = disp.recv_rows();
      Tensor xe = be->empty({std::max<int64_t>(r, 1), d}, DType::F32).rows(0, r);
      disp.dispatch(*be, xp, xe);
      // Every received row belongs to a local expert, in the segment and group the layout says.
      std::vector<float> got(r * d);
      if (r) be->download(xe, got.data());
      int64_t seen = 0;
      for (const auto& s : disp.segments())
        for (int64_t l = 0; l < local; ++l)
          for (int64_t j = s.begin + s.offsets[l]; j < s.begin + s.offsets[l + 1]; ++j, ++seen)
            EXPECT_EQ(int64_t(got[j * d + 1]), me * local + l) << "rank " << me << " row " << j;
      EXPECT_EQ(seen, r);
      Tensor back = be->empty({std::max<int64_t>(m, 1), d}, DType::F32).rows(0, m);
      disp.combine(*be, xe, back);
      std::vector<float> out(m * d);
      if (m) be->download(back, out.data());
      EXPECT_EQ(out, rows) << "rank " << me;

      // Gradients: the backward pass sends output gradients with dispatch and brings input
      // gradients home with combine, which is right only if combine is dispatch's adjoint:
      // sum over ranks of <dispatch(x), y> equals sum over ranks of <x, combine(y)>, for any x, y.
      std::vector<float> x(m * d), y(r * d);
      for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 7 + me * 13) % 11) - 5.0f;
      for (size_t i = 0; i < y.size(); ++i) y[i] = float((i * 5 + me * 3) % 9) - 4.0f;
      if (m) be->upload(x.data(), xp);
      if (r) be->upload(y.data(), xe);
      Tensor dx = be->empty({std::max<int64_t>(r, 1), d}, DType::F32).rows(0, r);
      disp.dispatch(*be, xp, dx);
      disp.combine(*be, xe, back);
      std::vector<float> dxh(r * d), backh(m * d);
      if (r) be->download(dx, dxh.data());
      if (m) be->download(back, backh.data());
      for (int64_t i = 0; i < r * d; ++i) lhs[me] += double(dxh[i]) * double(y[i]);
      for (int64_t i = 0; i < m * d; ++i) rhs[me] += double(x[i]) * double(backh[i]);
    });
  for (auto& t : threads) t.join();
  double l = 0, rr = 0;
  for (int i = 0; i < n; ++i) l += lhs[i], rr += rhs[i];
  EXPECT_EQ(l, rr);  // small integers: the sums are exact
  if (n > 1) EXPECT_NE(l, 0.0);
}

TEST(ExpertDispatcher, RoundTripBySource2) { round_trip(2, 4, ExpertOrder::BySource); }
TEST(ExpertDispatcher, RoundTripByExpert2) { round_trip(2, 4, ExpertOrder::ByExpert); }
TEST(ExpertDispatcher, RoundTripBySource4) { round_trip(4, 8, ExpertOrder::BySource); }
TEST(ExpertDispatcher, RoundTripByExpert4) { round_trip(4, 8, ExpertOrder::ByExpert); }
TEST(ExpertDispatcher, RoundTripOneRank) { round_trip(1, 4, ExpertOrder::ByExpert); }

}  // namespace
}  // namespace sy
