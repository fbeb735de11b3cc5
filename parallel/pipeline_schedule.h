// Pipeline-parallel schedules as data: one function builds each rank's list of actions (compute and
// point-to-point transfers of one micro-batch on one virtual stage), and one loop executes them.
// The simulator here is that loop with unit-time compute and instantaneous, buffered transfers,
// so a schedule can be checked for completeness, matching transfers, deadlock and bubble size
// without any communicator. Pure functions, no globals.
//
// Layout: the model is cut into pp * vpp chunks; virtual stage v of rank r holds chunk v * pp + r
// (Narayanan et al. 2021, Megatron-Core), so consecutive chunks sit on consecutive ranks and the
// activation of the last chunk of rank pp-1 wraps round to rank 0's next virtual stage.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

enum class PipeOp : uint8_t { Forward, Backward, SendActivation, RecvActivation, SendGrad, RecvGrad };

// `chunk` is always the chunk on THIS rank that the action belongs to: the one computed, the one
// whose output is sent, or the one whose input is received. `vstage` = chunk / pp. `peer` is the
// other rank of a transfer (-1 for compute). A transfer pair therefore matches as
//   SendActivation(m, c) on rank(c)  <->  RecvActivation(m, c + 1) on rank(c + 1)
//   SendGrad(m, c)       on rank(c)  <->  RecvGrad(m, c - 1)       on rank(c - 1)
// Transfers between chunks on the same rank (only when pp == 1) are omitted: the tensor stays put.
struct PipeAction {
  PipeOp op;
  int micro;
  int vstage;
  int chunk;
  int peer = -1;
};

struct PipeSchedule {
  int pp = 1, vpp = 1, micro = 1;
  std::vector<std::vector<PipeAction>> ranks;  // ranks[r]: rank r's actions, in program order
  int chunks() const { return pp * vpp; }
  int rank_of(int chunk) const { return chunk % pp; }
};

// Standard 1F1B for vpp == 1 (warm-up of pp-r-1 forwards, steady one-forward-one-backward,
// cool-down of the remaining backwards); interleaved 1F1B for vpp > 1, which needs
// micro % pp == 0. Throws std::invalid_argument with a one-line message on bad sizes.
PipeSchedule build_schedule(int pp, int vpp, int micro);

// Unit costs per chunk. Backward is twice forward (it computes both input and weight gradients);
// transfers cost nothing, so the bubble measured is the schedule's alone.
struct PipeCost {
  int64_t forward = 1;
  int64_t backward = 2;
};

struct PipeSimResult {
  bool ok = false;
  std::string error;                        // why not ok: deadlock, missing input, unmatched send
  int64_t makespan = 0;                     // time the last rank finishes
  std::vector<int64_t> busy;                // compute time per rank
  std::vector<double> idle_fraction;        // (makespan - busy[r]) / makespan
  std::vector<std::vector<int64_t>> start;  // start[r][i]: when rank r's action i began
};

// Each rank is a program counter over its list. A receive blocks until its matching send has
// happened (sends are buffered: they never block), and completes no earlier than the send; a
// compute must find its input already here (received, or produced locally) or the schedule is
// wrong. When no rank can advance and some are unfinished, that is a deadlock.
PipeSimResult simulate_schedule(const PipeSchedule& s, PipeCost cost = {});

// When each of a rank's sends is certainly complete, for releasing its buffer: the peer consumed
// it (its forward or backward waited for it) and afterwards sent this rank a message, so once
// this rank has received that message the send has arrived. completion[i] for a send action i is
// the index of this rank's compute action that consumes that message; -1 for other actions and
// for sends that nothing confirms before the step ends.
std::vector<int> send_completion_points(const PipeSchedule& s, int rank);

// The bubble (idle share of the makespan) the theory predicts with backward = 2 * forward:
// (p-1)/(m+p-1) for 1F1B, and with v virtual stages the warm-up shrinks to (p-1)/v chunk-times
// of the v*m per rank, giving (p-1)/(v*m+p-1) (about the 1F1B value divided by v).
double pipeline_bubble_formula(int pp, int vpp, int micro);

// Compact forms: F3.1 (forward of micro-batch 3 on virtual stage 1), B3.1, sa3.1>2 (send
// activation to rank 2), ra3.1<0, sg3.1>0, rg3.1<2.
std::string format_action(const PipeAction& a);

}  // namespace sy
