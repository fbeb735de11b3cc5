// The pipeline schedule builder as a pure function: completeness, matching transfers, a
// deadlock-free simulated run, the bubble against theory, the 1F1B activation-memory bound, and
// the `switchyard schedule` command.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/pipeline_schedule.h"
#include "planner/memory_model.h"

namespace {

using sy::PipeAction;
using sy::PipeOp;
using sy::PipeSchedule;

struct Sizes {
  int pp, vpp, micro;
};

// Every size the must-show list names: pp up to 16, vpp up to 4, micro-batches up to 64, where
// the interleaved schedule accepts them (micro a multiple of pp).
std::vector<Sizes> all_sizes() {
  std::vector<Sizes> out;
  for (int pp : {1, 2, 3, 4, 8, 16})
    for (int vpp : {1, 2, 4})
      for (int m = 1; m <= 64; ++m)
        if (vpp == 1 || m % pp == 0) out.push_back({pp, vpp, m});
  return out;
}

std::string name(const Sizes& z) {
  return "pp=" + std::to_string(z.pp) + " vpp=" + std::to_string(z.vpp) + " micro=" + std::to_string(z.micro);
}

bool is_send(PipeOp op) { return op == PipeOp::SendActivation || op == PipeOp::SendGrad; }
bool is_grad(PipeOp op) { return op == PipeOp::SendGrad || op == PipeOp::RecvGrad; }

// Checks one schedule; returns the first problem, or "" when sound.
std::string check_structure(const PipeSchedule& s) {
  const int C = s.chunks();
  // (micro, chunk) -> (rank, index) of its forward / backward.
  std::map<std::pair<int, int>, std::pair<int, size_t>> fwd, bwd;
  // (is_grad, micro, producing chunk, from rank, to rank) -> count; sends add, receives subtract.
  std::map<std::tuple<bool, int, int, int, int>, int> sends, recvs;
  for (int r = 0; r < s.pp; ++r) {
    const auto& list = s.ranks[r];
    for (size_t i = 0; i < list.size(); ++i) {
      const PipeAction& a = list[i];
      if (s.rank_of(a.chunk) != r || a.vstage != a.chunk / s.pp) return "rank " + std::to_string(r) + " holds a foreign chunk";
      const std::pair<int, int> mc{a.micro, a.chunk};
      if (a.op == PipeOp::Forward || a.op == PipeOp::Backward) {
        auto& table = a.op == PipeOp::Forward ? fwd : bwd;
        if (!table.emplace(mc, std::pair<int, size_t>{r, i}).second) return "duplicate compute " + sy::format_action(a);
        continue;
      }
      const bool grad = is_grad(a.op);
      if (is_send(a.op)) {
        ++sends[{grad, a.micro, a.chunk, r, a.peer}];
        // Sent right after the compute that produced it.
        const PipeOp producer = grad ? PipeOp::Backward : PipeOp::Forward;
        if (i == 0 || list[i - 1].op != producer || list[i - 1].micro != a.micro || list[i - 1].chunk != a.chunk)
          return "send not right after its compute: " + sy::format_action(a);
      } else {
        const int producer_chunk = grad ? a.chunk + 1 : a.chunk - 1;
        ++recvs[{grad, a.micro, producer_chunk, a.peer, r}];
        // Posted before the compute that consumes it.
        const PipeOp consumer = grad ? PipeOp::Backward : PipeOp::Forward;
        if (i + 1 >= list.size() || list[i + 1].op != consumer || list[i + 1].micro != a.micro || list[i + 1].chunk != a.chunk)
          return "receive not right before its compute: " + sy::format_action(a);
      }
    }
  }
  for (int m = 0; m < s.micro; ++m)
    for (int c = 0; c < C; ++c) {
      const auto f = fwd.find({m, c}), b = bwd.find({m, c});
      if (f == fwd.end() || b == bwd.end()) return "missing compute of micro " + std::to_string(m) + " chunk " + std::to_string(c);
      if (f->second.first != b->second.first || b->second.second <= f->second.second)
        return "backward before forward for micro " + std::to_string(m) + " chunk " + std::to_string(c);
    }
  if (fwd.size() != size_t(s.micro) * C || bwd.size() != size_t(s.micro) * C) return "extra computes";
  if (sends != recvs) return "sends and receives do not pair up one to one";
  for (const auto& [k, n] : sends)
    if (n != 1) return "a transfer appears more than once";
  // Every chunk boundary crosses ranks when pp > 1 (consecutive chunks sit on consecutive ranks).
  const size_t want = s.pp > 1 ? size_t(2) * s.micro * (C - 1) : 0;
  if (sends.size() != want) return "expected " + std::to_string(want) + " transfers, got " + std::to_string(sends.size());
  return "";
}

// Largest number of micro-batches whose forward ran on this rank and whose backward has not.
int max_in_flight(const std::vector<PipeAction>& list) {
  int now = 0, most = 0;
  for (const PipeAction& a : list) {
    if (a.op == PipeOp::Forward) most = std::max(most, ++now);
    if (a.op == PipeOp::Backward) --now;
  }
  return most;
}

TEST(PipelineSchedule, EveryComputeOnceAndTransfersMatchForAllSizes) {
  for (const Sizes& z : all_sizes()) {
    const PipeSchedule s = sy::build_schedule(z.pp, z.vpp, z.micro);
    ASSERT_EQ(int(s.ranks.size()), z.pp);
    const std::string problem = check_structure(s);
    ASSERT_EQ(problem, "") << name(z);
  }
}

TEST(PipelineSchedule, SimulationFinishesWithoutDeadlock) {
  for (const Sizes& z : all_sizes()) {
    const auto sim = sy::simulate_schedule(sy::build_schedule(z.pp, z.vpp, z.micro));
    ASSERT_TRUE(sim.ok) << name(z) << ": " << sim.error;
    for (int r = 0; r < z.pp; ++r) EXPECT_EQ(sim.busy[r], 3 * int64_t(z.micro) * z.vpp) << name(z);
  }
}

// With forward 1 and backward 2 units and free transfers, 1F1B finishes in exactly
// (m + p - 1) * 3 units (the first micro-batch's forward ramp plus the last one's backward
// ramp around m full F+B steps), so every rank idles exactly (p-1)/(m+p-1) of the time.
TEST(PipelineSchedule, OneFOneBBubbleIsExactlyTheFormula) {
  for (const Sizes& z : all_sizes()) {
    if (z.vpp != 1) continue;
    const auto sim = sy::simulate_schedule(sy::build_schedule(z.pp, 1, z.micro));
    ASSERT_TRUE(sim.ok) << name(z);
    EXPECT_EQ(sim.makespan, 3 * int64_t(z.micro + z.pp - 1)) << name(z);
    const double want = double(z.pp - 1) / double(z.micro + z.pp - 1);
    EXPECT_DOUBLE_EQ(sy::pipeline_bubble_formula(z.pp, 1, z.micro), want);
    for (int r = 0; r < z.pp; ++r) EXPECT_NEAR(sim.idle_fraction[r], want, 1e-12) << name(z) << " rank " << r;
  }
}

// Interleaved, each chunk costs 1 + 2 units, so a rank is busy 3*v*m and the fill/drain ramp is
// (p-1) chunk F+B times: bubble (p-1)/(v*m+p-1), which is the 1F1B bubble divided by about v.
// The simulation meets that to 1e-12 for every size here. The plain "1F1B bubble / v" reading is
// a lower bound of it (the ramp is a smaller share of a shorter makespan), so check both ends.
TEST(PipelineSchedule, InterleavedBubbleShrinksByV) {
  for (const Sizes& z : all_sizes()) {
    if (z.vpp == 1) continue;
    const auto sim = sy::simulate_schedule(sy::build_schedule(z.pp, z.vpp, z.micro));
    ASSERT_TRUE(sim.ok) << name(z);
    const double formula = sy::pipeline_bubble_formula(z.pp, z.vpp, z.micro);
    const double one_f_one_b = sy::pipeline_bubble_formula(z.pp, 1, z.micro);
    for (int r = 0; r < z.pp; ++r) {
      EXPECT_NEAR(sim.idle_fraction[r], formula, 1e-12) << name(z) << " rank " << r;
      EXPECT_GE(sim.idle_fraction[r] + 1e-12, one_f_one_b / z.vpp) << name(z);
      EXPECT_LE(sim.idle_fraction[r], one_f_one_b + 1e-12) << name(z);
    }
  }
}

// 1F1B's point: rank r holds at most p - r micro-batches' activations (rank 0 at most p), not m.
TEST(PipelineSchedule, OneFOneBActivationMemoryBound) {
  for (const Sizes& z : all_sizes()) {
    if (z.vpp != 1) continue;
    const PipeSchedule s = sy::build_schedule(z.pp, 1, z.micro);
    EXPECT_EQ(max_in_flight(s.ranks[0]), std::min(z.pp, z.micro)) << name(z);
    for (int r = 0; r < z.pp; ++r) EXPECT_LE(max_in_flight(s.ranks[r]), z.pp - r) << name(z);
  }
}

TEST(PipelineSchedule, BadSizesAreOneLineErrors) {
  EXPECT_THROW(sy::build_schedule(0, 1, 4), std::invalid_argument);
  EXPECT_THROW(sy::build_schedule(4, 0, 4), std::invalid_argument);
  EXPECT_THROW(sy::build_schedule(4, 1, 0), std::invalid_argument);
  try {
    sy::build_schedule(4, 2, 6);
    FAIL() << "interleaved with micro % pp != 0 must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of pp"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

// The simulator is only useful if it catches broken schedules.
TEST(PipelineSchedule, SimulatorDetectsDeadlockAndMissingInputs) {
  PipeSchedule s = sy::build_schedule(2, 1, 1);
  // Rank 0: F0.0 sa0.0>1 rg0.0<1 B0.0. Waiting for the gradient before sending the activation
  // leaves both ranks in a receive.
  auto& r0 = s.ranks[0];
  ASSERT_EQ(r0.size(), 4u);
  std::swap(r0[0], r0[2]);
  std::swap(r0[1], r0[2]);  // rg0.0<1 F0.0 sa0.0>1 B0.0
  auto sim = sy::simulate_schedule(s);
  EXPECT_FALSE(sim.ok);
  EXPECT_NE(sim.error.find("deadlock"), std::string::npos) << sim.error;

  PipeSchedule t = sy::build_schedule(2, 1, 2);
  t.ranks[1].erase(t.ranks[1].begin());  // drop rank 1's first receive
  sim = sy::simulate_schedule(t);
  EXPECT_FALSE(sim.ok);
  EXPECT_NE(sim.error.find("input activation"), std::string::npos) << sim.error;
}

struct CliResult {
  int code = -1;
  std::string out, err;
};

CliResult run_cli(const std::string& args) {
  const std::string err_path = testing::TempDir() + "sy_schedule_stderr_" + std::to_string(::getpid());
  const std::string cmd = "'" SY_BINARY_DIR "/switchyard' " + args + " 2>'" + err_path + "'";
  CliResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (FILE* e = std::fopen(err_path.c_str(), "r")) {
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, e)) > 0;) r.err.append(buf, n);
    std::fclose(e);
  }
  std::remove(err_path.c_str());
  return r;
}

TEST(ScheduleCli, PrintsEveryRank) {
  const CliResult r = run_cli("schedule --pp 4 --vpp 1 --micro 8");
  ASSERT_EQ(r.code, 0) << r.err;
  // Rank 0 starts with its first forward, every later rank with the receive that feeds it.
  EXPECT_NE(r.out.find("rank 0: F0.0 sa0.0>1"), std::string::npos) << r.out;
  for (int rank = 1; rank < 4; ++rank)
    EXPECT_NE(r.out.find("rank " + std::to_string(rank) + ": ra0.0<" + std::to_string(rank - 1)), std::string::npos)
        << "rank " << rank << " missing:\n" << r.out;
  EXPECT_EQ(r.out.find("rank 4:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bubble rank 3: 0.2727"), std::string::npos) << r.out;
}

TEST(ScheduleCli, BadArgumentsExitTwoWithOneLine) {
  for (const char* args : {"schedule --pp 0 --micro 4", "schedule --pp 3 --vpp 2 --micro 4", "schedule --pp 4"}) {
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_EQ(r.err.rfind("switchyard: error: ", 0), 0u) << args << ": " << r.err;
    ASSERT_FALSE(r.err.empty()) << args;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << args << ": more than one line:\n" << r.err;
  }
}

}  // namespace

namespace sy {
namespace {

// A send's completion point is a later compute of the same rank that waits for a message the peer
// sent only after consuming the send; in the steady state every send gets one, so the buffers a
// stage holds stop growing with the number of micro-batches.
TEST(PipelineSchedule, SendCompletionPointsComeAfterTheSendAndBoundTheBuffers) {
  for (int pp : {2, 4, 8})
    for (int vpp : {1, 2}) {
      for (int m : {pp, 4 * pp}) {
        const PipeSchedule s = build_schedule(pp, vpp, m);
        for (int r = 0; r < pp; ++r) {
          const auto& acts = s.ranks[size_t(r)];
          const std::vector<int> at = send_completion_points(s, r);
          ASSERT_EQ(at.size(), acts.size());
          int sends = 0, confirmed = 0;
          for (size_t i = 0; i < acts.size(); ++i) {
            const bool send = acts[i].op == PipeOp::SendActivation || acts[i].op == PipeOp::SendGrad;
            if (!send) {
              EXPECT_EQ(at[i], -1);
              continue;
            }
            ++sends;
            if (at[i] < 0) continue;
            ++confirmed;
            EXPECT_GT(at[i], int(i)) << "pp " << pp << " rank " << r;
            const PipeOp op = acts[size_t(at[i])].op;
            EXPECT_TRUE(op == PipeOp::Forward || op == PipeOp::Backward);
          }
          // Only the sends of the last few micro-batches can wait for the step's end.
          EXPECT_GE(confirmed, sends - 2 * pp * vpp) << "pp " << pp << " vpp " << vpp << " m " << m << " rank " << r;
        }
      }
      for (int r = 0; r < pp; ++r)
        EXPECT_EQ(pipeline_buffer_count(pp, vpp, 4 * pp, r, 1), pipeline_buffer_count(pp, vpp, 16 * pp, r, 1))
            << "pp " << pp << " vpp " << vpp << " rank " << r;
    }
}

}  // namespace
}  // namespace sy
