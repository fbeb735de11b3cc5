#include "parallel/pipeline_executor.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

namespace sy {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

bool is_recv(PipeOp op) { return op == PipeOp::RecvActivation || op == PipeOp::RecvGrad; }

}  // namespace

PipelineExecutor::PipelineExecutor(Communicator& pp, Backend& be, PipeSchedule schedule)
    : comm_(pp), be_(be), s_(std::move(schedule)), rank_(pp.rank()) {
  if (s_.pp != pp.size())
    throw std::invalid_argument("pipeline schedule for pp=" + std::to_string(s_.pp) + " on a group of " +
                                std::to_string(pp.size()) + " ranks");
  send_done_at_ = send_completion_points(s_, rank_);
}

Tensor PipelineExecutor::take_buffer(const Tensor& like) {
  for (size_t i = 0; i < free_.size(); ++i)
    if (free_[i].numel() == like.numel() && free_[i].dtype() == like.dtype()) {
      Tensor t = free_[i];
      free_.erase(free_.begin() + long(i));
      return t;
    }
  MemScope scope(be_, MemCategory::Activations);
  return be_.empty(like.shape(), like.dtype());
}

void PipelineExecutor::give_buffer(Tensor t) { free_.push_back(std::move(t)); }

// Unique per (micro-batch, receiving chunk, kind) within a step; the MPI bound on tags is at
// least 32767, and 64 micro-batches x 64 chunks x 2 stay under 8192.
int PipelineExecutor::tag(int micro, int chunk_of_receiver, bool grad) const {
  return (micro * s_.chunks() + chunk_of_receiver) * 2 + (grad ? 1 : 0);
}

void PipelineExecutor::post_recv(const PipeAction& a, const Tensor& like) {
  const bool grad = a.op == PipeOp::RecvGrad;
  auto& slots = grad ? recv_grad_ : recv_act_;
  const auto key = std::make_pair(a.micro, a.chunk);
  if (slots.count(key)) return;  // posted ahead already
  Pending p{{}, take_buffer(like)};
  p.req = comm_.irecv(p.buf.raw(), p.buf.numel(), comm_type_of(p.buf.dtype()), a.peer, tag(a.micro, a.chunk, grad));
  slots.emplace(key, std::move(p));
}

Tensor PipelineExecutor::wait_recv(int micro, int chunk, bool grad) {
  auto& slots = grad ? recv_grad_ : recv_act_;
  auto it = slots.find({micro, chunk});
  if (it == slots.end())
    throw std::logic_error("pipeline schedule computes micro-batch " + std::to_string(micro) + " on chunk " +
                           std::to_string(chunk) + " before receiving its " + (grad ? "gradient" : "activation"));
  comm_.wait(it->second.req);
  Tensor t = it->second.buf;
  slots.erase(it);
  return t;
}

void PipelineExecutor::send(const Tensor& src, int peer, int t, int release_at) {
  Pending p{{}, take_buffer(src), release_at};
  be_.copy(src, p.buf);  // the source is overwritten by the chunk's next micro-batch
  p.req = comm_.isend(p.buf.raw(), p.buf.numel(), comm_type_of(p.buf.dtype()), peer, t);
  sends_.push_back(std::move(p));
}

// Without this a stage would hold every send of the step (2 m v buffers on a middle stage).
void PipelineExecutor::release_sends(int at) {
  for (size_t i = 0; i < sends_.size();)
    if (sends_[i].release_at == at) {
      comm_.wait(sends_[i].req);
      give_buffer(std::move(sends_[i].buf));
      sends_.erase(sends_.begin() + long(i));
    } else {
      ++i;
    }
}

void PipelineExecutor::finish_sends() {
  for (Pending& p : sends_) {
    comm_.wait(p.req);
    give_buffer(std::move(p.buf));
  }
  sends_.clear();
}

PipeStepStats PipelineExecutor::run(PipelineStage& stage) {
  const std::vector<PipeAction>& acts = s_.ranks[size_t(rank_)];
  const int n_chunks = s_.chunks();
  PipeStepStats st;
  const auto t0 = Clock::now();
  std::vector<int> last_forward(size_t(s_.vpp), -1);  // per local chunk: the micro-batch its layers hold
  std::map<std::pair<int, int>, Tensor> kept;         // (micro, local chunk) -> the chunk's input
  int in_flight = 0;
  // The next kAhead receives in program order are kept posted ahead of the compute that needs
  // them, so a transfer that the peer has already started never waits for this rank's program
  // order; no more than that, so the receive buffers do not grow with the micro-batches.
  constexpr int kAhead = 2;
  auto post_ahead = [&](size_t pos) {
    int seen = 0;
    for (size_t j = pos; j < acts.size() && seen < kAhead; ++j)
      if (is_recv(acts[j].op)) {
        post_recv(acts[j], stage.input(acts[j].vstage));  // a no-op where posted already
        ++seen;
      }
  };
  for (size_t i = 0; i < acts.size(); ++i) {
    const PipeAction& a = acts[i];
    const int c = a.vstage;
    const bool model_first = a.chunk == 0, model_last = a.chunk == n_chunks - 1;
    switch (a.op) {
      case PipeOp::RecvActivation:
      case PipeOp::RecvGrad:
        post_recv(a, stage.input(c));
        break;
      case PipeOp::Forward: {
        Tensor in;
        if (!model_first) in = wait_recv(a.micro, a.chunk, false), release_sends(int(i));
        const auto tc = Clock::now();
        if (!model_first) {
          be_.copy(in, stage.input(c));
          kept.emplace(std::make_pair(a.micro, c), in);  // the received buffer is the kept copy
        }
        stage.forward(c, a.micro, false);
        last_forward[size_t(c)] = a.micro;
        ++in_flight;
        st.max_in_flight = std::max(st.max_in_flight, in_flight);
        st.max_kept_inputs = std::max(st.max_kept_inputs, int(kept.size()));
        st.busy_s += since(tc);
        post_ahead(i + 1);
        break;
      }
      case PipeOp::Backward: {
        Tensor g;
        if (!model_last) g = wait_recv(a.micro, a.chunk, true), release_sends(int(i));
        const auto tc = Clock::now();
        if (last_forward[size_t(c)] != a.micro) {
          if (!model_first) be_.copy(kept.at({a.micro, c}), stage.input(c));
          stage.forward(c, a.micro, true);
          ++st.recomputes;
        }
        if (!model_last) {
          be_.copy(g, stage.grad());
          give_buffer(g);
        }
        stage.backward(c, a.micro);
        last_forward[size_t(c)] = -1;  // backward may have used the activations as scratch
        if (auto it = kept.find({a.micro, c}); it != kept.end()) {
          give_buffer(it->second);
          kept.erase(it);
        }
        --in_flight;
        st.busy_s += since(tc);
        post_ahead(i + 1);
        break;
      }
      case PipeOp::SendActivation:
        send(stage.output(c), a.peer, tag(a.micro, a.chunk + 1, false), send_done_at_[i]);
        break;
      case PipeOp::SendGrad:
        send(stage.grad(), a.peer, tag(a.micro, a.chunk - 1, true), send_done_at_[i]);
        break;
    }
  }
  finish_sends();
  if (!recv_act_.empty() || !recv_grad_.empty() || !kept.empty() || in_flight != 0)
    throw std::logic_error("pipeline schedule left transfers or micro-batches unfinished on rank " +
                           std::to_string(rank_));
  st.span_s = since(t0);
  st.idle_fraction = st.span_s > 0 ? std::max(0.0, (st.span_s - st.busy_s) / st.span_s) : 0;
  return st;
}

void PipelineExecutor::run_forward_only(PipelineStage& stage, int micro) {
  const int p = s_.pp, n_chunks = s_.chunks();
  for (int m = 0; m < micro; ++m)
    for (int c = 0; c < s_.vpp; ++c) {
      const int g = c * p + rank_;  // the global chunk
      if (g > 0) {
        Tensor in = take_buffer(stage.input(c));
        CommRequest r = comm_.irecv(in.raw(), in.numel(), comm_type_of(in.dtype()), (g - 1) % p, tag(m, g, false));
        comm_.wait(r);
        be_.copy(in, stage.input(c));
        give_buffer(in);
      }
      stage.forward(c, m, false);
      if (g + 1 < n_chunks) send(stage.output(c), (g + 1) % p, tag(m, g + 1, false), -1);
    }
  finish_sends();
}

}  // namespace sy
