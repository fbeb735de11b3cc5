// The one loop that runs a pipeline schedule (pipeline_schedule.h) on this rank: compute through
// the stage it drives, activations and gradients through non-blocking sends and receives on the
// pipeline group's communicator.
//
// Activations between forward and backward: a stage keeps, per micro-batch in flight, only the
// input of each chunk (the received activation); the layers keep one micro-batch's activations
// per chunk. A backward whose micro-batch is not the one the chunk ran forward last recomputes
// the chunk's forward from the kept input first (full recomputation, as Megatron-Core's
// recompute_granularity=full). The last stage's 1F1B runs each backward right after its forward
// and never recomputes. So under 1F1B stage r holds at most pp - r chunk inputs, whatever the
// number of micro-batches, at the cost of one more forward per chunk and micro-batch elsewhere.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "engine/backend.h"
#include "parallel/comm.h"
#include "parallel/pipeline_schedule.h"

namespace sy {

// What the executor asks of the stage it drives; the trainer adapts the model to it. Chunk c is
// this rank's c-th chunk (virtual stage c).
class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  // Forward of micro-batch m on chunk c, its input already in input(c) unless the chunk is the
  // model's first. `recompute`: the second forward of m before its backward (no side effects).
  virtual void forward(int c, int m, bool recompute) = 0;
  // Backward of micro-batch m on chunk c, right after a forward of m on c; the gradient of
  // output(c) already in grad() unless the chunk is the model's last. Leaves the gradient of
  // input(c) in grad().
  virtual void backward(int c, int m) = 0;
  virtual const Tensor& input(int c) = 0;
  virtual const Tensor& output(int c) = 0;
  virtual const Tensor& grad() = 0;
};

struct PipeStepStats {
  double span_s = 0;          // the step on this rank, first action to last send completed
  double busy_s = 0;          // compute (forward, recompute, backward and the copies around them)
  double idle_fraction = 0;   // (span - busy) / span: the bubble measured on this rank
  int max_in_flight = 0;      // micro-batches forwarded and not yet backwarded, at most (all chunks)
  int max_kept_inputs = 0;    // chunk inputs kept for backward, at most
  int recomputes = 0;
};

class PipelineExecutor {
 public:
  // `pp`: the pipeline group (rank r = stage r); the schedule's pp must equal its size.
  PipelineExecutor(Communicator& pp, Backend& be, PipeSchedule schedule);
  const PipeSchedule& schedule() const { return s_; }

  // One step's forwards and backwards of every micro-batch, as the schedule says.
  PipeStepStats run(PipelineStage& stage);
  // Forward only (evaluation) of `micro` micro-batches: each goes through every chunk in order.
  void run_forward_only(PipelineStage& stage, int micro);

 private:
  struct Pending {
    CommRequest req;
    Tensor buf;
    int release_at = -1;  // sends: the action after whose receive it is known complete (-1: step end)
  };
  Tensor take_buffer(const Tensor& like);
  void give_buffer(Tensor t);
  int tag(int micro, int chunk_of_receiver, bool grad) const;
  void post_recv(const PipeAction& a, const Tensor& like);
  Tensor wait_recv(int micro, int chunk, bool grad);
  void send(const Tensor& src, int peer, int tag, int release_at);
  // Completes (without waiting: they have arrived) and recycles the sends confirmed by the
  // receive of action `at`.
  void release_sends(int at);
  void finish_sends();

  Communicator& comm_;
  Backend& be_;
  PipeSchedule s_;
  int rank_;
  std::vector<int> send_done_at_;  // send_completion_points of this rank's actions
  std::vector<Tensor> free_;
  std::map<std::pair<int, int>, Pending> recv_act_, recv_grad_;  // by (micro, chunk)
  std::vector<Pending> sends_;
};

}  // namespace sy
