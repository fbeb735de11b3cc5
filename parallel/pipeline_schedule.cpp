#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace sy {

namespace {

struct Compute {
  bool backward;
  int micro;
  int vstage;
};

// Standard 1F1B: rank r runs pp-r-1 forwards before its first backward, so the micro-batch it
// starts last in warm-up reaches the last stage just as that stage begins steady state; after
// that each forward is paired with the oldest outstanding backward, which caps the activations
// held on rank r at pp - r.
std::vector<Compute> one_f_one_b(int pp, int micro, int r) {
  const int warmup = std::min(pp - r - 1, micro);
  const int steady = micro - warmup;
  std::vector<Compute> out;
  for (int i = 0; i < warmup; ++i) out.push_back({false, i, 0});
  for (int i = 0; i < steady; ++i) {
    out.push_back({false, warmup + i, 0});
    out.push_back({true, i, 0});
  }
  for (int i = steady; i < micro; ++i) out.push_back({true, i, 0});
  return out;
}

// Interleaved 1F1B (Narayanan et al. 2021, as in Megatron-Core): forwards walk the micro-batches
// in groups of pp, running a whole group through virtual stage 0, then through stage 1, and so
// on; backwards walk the same groups through the stages in reverse. The k-th forward (backward)
// step of a rank is micro-batch (k / (pp*v)) * pp + k % pp on stage (k / pp) % v (reversed for
// backward). The warm-up is long enough that the first backward's gradient has had time to come
// back: 2 * (pp-r-1) steps for the round trip to the last rank plus (v-1)*pp to fill the other
// virtual stages.
std::vector<Compute> interleaved(int pp, int vpp, int micro, int r) {
  const int total = micro * vpp;
  auto step = [&](int k, bool backward) {
    const int m = (k / (pp * vpp)) * pp + k % pp;
    const int v = (k / pp) % vpp;
    return Compute{backward, m, backward ? vpp - 1 - v : v};
  };
  const int warmup = std::min(total, 2 * (pp - r - 1) + (vpp - 1) * pp);
  const int steady = total - warmup;
  std::vector<Compute> out;
  for (int k = 0; k < warmup; ++k) out.push_back(step(k, false));
  for (int k = 0; k < steady; ++k) {
    out.push_back(step(warmup + k, false));
    out.push_back(step(k, true));
  }
  for (int k = steady; k < total; ++k) out.push_back(step(k, true));
  return out;
}

}  // namespace

PipeSchedule build_schedule(int pp, int vpp, int micro) {
  if (pp < 1 || vpp < 1 || micro < 1)
    throw std::invalid_argument("pipeline sizes must be at least 1 (got pp=" + std::to_string(pp) + ", vpp=" +
                                std::to_string(vpp) + ", micro=" + std::to_string(micro) + ")");
  // The interleaved order walks micro-batches in whole groups of pp; a partial group would leave
  // some rank with nothing to run on a virtual stage while its neighbour waits on it.
  if (vpp > 1 && micro % pp != 0)
    throw std::invalid_argument("interleaved schedule (vpp=" + std::to_string(vpp) + ") needs micro-batches (" +
                                std::to_string(micro) + ") to be a multiple of pp (" + std::to_string(pp) + ")");
  PipeSchedule s;
  s.pp = pp;
  s.vpp = vpp;
  s.micro = micro;
  s.ranks.resize(pp);
  const int last = s.chunks() - 1;
  for (int r = 0; r < pp; ++r) {
    const auto order = vpp == 1 ? one_f_one_b(pp, micro, r) : interleaved(pp, vpp, micro, r);
    auto& list = s.ranks[r];
    for (const Compute& c : order) {
      const int chunk = c.vstage * pp + r;
      const int prev = chunk - 1, next = chunk + 1;
      // Receives right before the compute that needs them, sends right after the compute that
      // produces them: the executor then never holds a buffer longer than the data dependency.
      if (!c.backward) {
        if (prev >= 0 && s.rank_of(prev) != r)
          list.push_back({PipeOp::RecvActivation, c.micro, c.vstage, chunk, s.rank_of(prev)});
        list.push_back({PipeOp::Forward, c.micro, c.vstage, chunk});
        if (next <= last && s.rank_of(next) != r)
          list.push_back({PipeOp::SendActivation, c.micro, c.vstage, chunk, s.rank_of(next)});
      } else {
        if (next <= last && s.rank_of(next) != r)
          list.push_back({PipeOp::RecvGrad, c.micro, c.vstage, chunk, s.rank_of(next)});
        list.push_back({PipeOp::Backward, c.micro, c.vstage, chunk});
        if (prev >= 0 && s.rank_of(prev) != r)
          list.push_back({PipeOp::SendGrad, c.micro, c.vstage, chunk, s.rank_of(prev)});
      }
    }
  }
  return s;
}

PipeSimResult simulate_schedule(const PipeSchedule& s, PipeCost cost) {
  PipeSimResult res;
  const int P = s.pp, last = s.chunks() - 1;
  res.busy.assign(P, 0);
  res.start.resize(P);
  for (int r = 0; r < P; ++r) res.start[r].assign(s.ranks[r].size(), 0);

  // In flight: (is_grad, micro, producing chunk) -> time it was sent.
  using Key = std::tuple<bool, int, int>;
  std::map<Key, int64_t> in_flight;
  // Per rank: (micro, chunk) whose input has arrived / whose compute is done.
  std::vector<std::set<std::pair<int, int>>> got_act(P), got_grad(P), fwd_done(P), bwd_done(P);
  std::vector<size_t> pc(P, 0);
  std::vector<int64_t> clock(P, 0);

  auto fail = [&](int r, const PipeAction& a, const std::string& why) {
    res.error = "rank " + std::to_string(r) + " action " + format_action(a) + ": " + why;
    return res;
  };
  auto local = [&](int r, int chunk) { return chunk >= 0 && chunk <= last && s.rank_of(chunk) == r; };

  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < P; ++r) {
      for (; pc[r] < s.ranks[r].size(); ++pc[r]) {
        const PipeAction& a = s.ranks[r][pc[r]];
        if (!local(r, a.chunk) || a.vstage != a.chunk / P || a.micro < 0 || a.micro >= s.micro)
          return fail(r, a, "chunk or micro-batch out of range for this rank");
        const std::pair<int, int> mc{a.micro, a.chunk};
        res.start[r][pc[r]] = clock[r];
        switch (a.op) {
          case PipeOp::SendActivation:
          case PipeOp::SendGrad: {
            const bool grad = a.op == PipeOp::SendGrad;
            const int to = grad ? a.chunk - 1 : a.chunk + 1;
            if (to < 0 || to > last || a.peer != s.rank_of(to)) return fail(r, a, "peer does not hold the next chunk");
            if (!(grad ? bwd_done[r] : fwd_done[r]).count(mc)) return fail(r, a, "sent before it was computed");
            if (!in_flight.emplace(Key{grad, a.micro, a.chunk}, clock[r]).second) return fail(r, a, "sent twice");
            break;
          }
          case PipeOp::RecvActivation:
          case PipeOp::RecvGrad: {
            const bool grad = a.op == PipeOp::RecvGrad;
            const int from = grad ? a.chunk + 1 : a.chunk - 1;
            if (from < 0 || from > last || a.peer != s.rank_of(from)) return fail(r, a, "peer does not hold that chunk");
            const auto it = in_flight.find(Key{grad, a.micro, from});
            if (it == in_flight.end()) goto blocked;  // its send has not happened yet
            clock[r] = std::max(clock[r], it->second);
            in_flight.erase(it);
            if (!(grad ? got_grad[r] : got_act[r]).insert(mc).second) return fail(r, a, "received twice");
            break;
          }
          case PipeOp::Forward:
            if (a.chunk > 0 && !got_act[r].count(mc) && !(local(r, a.chunk - 1) && fwd_done[r].count({a.micro, a.chunk - 1})))
              return fail(r, a, "runs before its input activation is here");
            if (!fwd_done[r].insert(mc).second) return fail(r, a, "forward run twice");
            clock[r] += cost.forward;
            res.busy[r] += cost.forward;
            break;
          case PipeOp::Backward:
            if (!fwd_done[r].count(mc)) return fail(r, a, "backward before its forward");
            if (a.chunk < last && !got_grad[r].count(mc) && !(local(r, a.chunk + 1) && bwd_done[r].count({a.micro, a.chunk + 1})))
              return fail(r, a, "runs before its output gradient is here");
            if (!bwd_done[r].insert(mc).second) return fail(r, a, "backward run twice");
            clock[r] += cost.backward;
            res.busy[r] += cost.backward;
            break;
        }
        progress = true;
      }
    blocked:;
    }
  }

  std::string stuck;
  for (int r = 0; r < P; ++r)
    if (pc[r] < s.ranks[r].size())
      stuck += (stuck.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " at " + format_action(s.ranks[r][pc[r]]);
  if (!stuck.empty()) {
    res.error = "deadlock: every unfinished rank waits on a receive (" + stuck + ")";
    return res;
  }
  if (!in_flight.empty()) {
    const auto& [grad, m, c] = in_flight.begin()->first;
    res.error = std::string(grad ? "gradient" : "activation") + " of micro-batch " + std::to_string(m) + " from chunk " +
                std::to_string(c) + " was sent but never received";
    return res;
  }
  for (int r = 0; r < P; ++r) {
    const size_t want = size_t(s.micro) * s.vpp;
    if (fwd_done[r].size() != want || bwd_done[r].size() != want) {
      res.error = "rank " + std::to_string(r) + " did not run every forward and backward of its chunks";
      return res;
    }
  }
  res.makespan = *std::max_element(clock.begin(), clock.end());
  res.idle_fraction.resize(P);
  for (int r = 0; r < P; ++r)
    res.idle_fraction[r] = res.makespan ? double(res.makespan - res.busy[r]) / double(res.makespan) : 0.0;
  res.ok = true;
  return res;
}

std::vector<int> send_completion_points(const PipeSchedule& s, int rank) {
  const auto& mine = s.ranks[size_t(rank)];
  // The compute action of `list` that consumes what chunk `from` sent for micro-batch `micro`
  // (an activation feeds the next chunk's forward, a gradient the previous chunk's backward).
  auto consumer = [](const std::vector<PipeAction>& list, PipeOp send, int micro, int from) {
    const PipeOp op = send == PipeOp::SendActivation ? PipeOp::Forward : PipeOp::Backward;
    const int chunk = send == PipeOp::SendActivation ? from + 1 : from - 1;
    for (size_t j = 0; j < list.size(); ++j)
      if (list[j].op == op && list[j].micro == micro && list[j].chunk == chunk) return int(j);
    return -1;
  };
  std::vector<int> out(mine.size(), -1);
  for (size_t i = 0; i < mine.size(); ++i) {
    const PipeAction& a = mine[i];
    if (a.op != PipeOp::SendActivation && a.op != PipeOp::SendGrad) continue;
    const auto& peer = s.ranks[size_t(a.peer)];
    const int j = consumer(peer, a.op, a.micro, a.chunk);
    if (j < 0) continue;
    for (size_t k = size_t(j) + 1; k < peer.size(); ++k) {
      const PipeAction& b = peer[k];
      if ((b.op == PipeOp::SendActivation || b.op == PipeOp::SendGrad) && b.peer == rank) {
        out[i] = consumer(mine, b.op, b.micro, b.chunk);
        break;
      }
    }
  }
  return out;
}

double pipeline_bubble_formula(int pp, int vpp, int micro) {
  return double(pp - 1) / double(int64_t(vpp) * micro + pp - 1);
}

std::string format_action(const PipeAction& a) {
  const std::string mv = std::to_string(a.micro) + "." + std::to_string(a.vstage);
  const std::string peer = std::to_string(a.peer);
  switch (a.op) {
    case PipeOp::Forward: return "F" + mv;
    case PipeOp::Backward: return "B" + mv;
    case PipeOp::SendActivation: return "sa" + mv + ">" + peer;
    case PipeOp::RecvActivation: return "ra" + mv + "<" + peer;
    case PipeOp::SendGrad: return "sg" + mv + ">" + peer;
    case PipeOp::RecvGrad: return "rg" + mv + "<" + peer;
  }
  return "?";
}

}  // namespace sy
