// Tensor and sequence parallelism seen from the engine (Megatron-style). engine/ does not depend
// on parallel/: layers talk to this interface, and the trainer plugs in an implementation over a
// communicator (parallel/tensor_parallel_comm.h).
//
// A TP group of t ranks splits each layer's weights: column-parallel matrices (q, k, v, gate, up,
// the LM head and the embedding over the vocabulary) by output rows, row-parallel ones (the
// attention output and the down projection, stored [in, out]) by input rows, so every split is a
// contiguous block of rows of the stored matrix. Activations cross region boundaries in pairs
// whose backward is the forward's adjoint:
//
//   region entry (before a column-parallel block)   region exit (after a row-parallel block)
//   sp off: identity   / all-reduce (backward)       all-reduce      / identity (backward)
//   sp on : all-gather / reduce-scatter (backward)   reduce-scatter  / all-gather (backward)
//
// With sequence parallelism the residual stream, the norms and the router hold N / t token rows
// per rank (rows [r N/t, (r+1) N/t) of the micro-batch's N = batch * seq rows).
#pragma once

#include <vector>

#include "engine/backend.h"

namespace sy {

class TensorParallel {
 public:
  virtual ~TensorParallel() = default;
  virtual int size() const = 0;
  virtual int rank() const = 0;
  virtual void all_reduce_sum(const Tensor& t) = 0;  // in place
  virtual void all_reduce_max(const Tensor& t) = 0;  // in place
  // shard [n, ...] of every rank -> full [size * n, ...] in rank order (any dtype).
  virtual void all_gather_rows(const Tensor& shard, const Tensor& full) = 0;
  // full [size * n, ...] summed over the ranks; rank r keeps rows [r n, (r + 1) n) in shard.
  virtual void reduce_scatter_rows(const Tensor& full, const Tensor& shard) = 0;
  // Host doubles summed over the ranks, in place (loss parts, expert loads).
  virtual void all_reduce_host(std::vector<double>& v) = 0;
};

// Buffers every TP layer borrows in turn, owned by the model (layers run one after another and
// none keeps these past its own forward or backward, so one set serves them all): the gathered
// input and the row-parallel partial sums (or the gathered output gradient), [N, D] each; the
// input gradient's partial sums [N, D]; a [N/t, D] scratch for reduce-scatters. With sequence
// parallelism a layer keeps only its own rows and re-gathers its input in the backward pass, so
// what it keeps scales as 1/t (Korthikanti et al.).
struct TpWorkspace {
  Tensor gathered, partial, dinput, local;
};

// What a layer needs to know about its tensor-parallel placement. comm == nullptr: tp = 1.
struct TpPlace {
  TensorParallel* comm = nullptr;
  bool sp = false;
  TpWorkspace* ws = nullptr;  // set by the model
  int size() const { return comm ? comm->size() : 1; }
  int rank() const { return comm ? comm->rank() : 0; }
  bool on() const { return comm && comm->size() > 1; }
  bool seq() const { return on() && sp; }
};

// The region boundaries of the table above, on [rows, D] activations (N rows, or N/t with sp),
// using the workspace. Entry forward: the tensor a column-parallel block reads (x itself, or x
// all-gathered into ws.gathered; the backward pass calls it again to re-gather).
Tensor tp_enter(const TpPlace& tp, const Tensor& x);
// Entry backward: dx += the adjoint of the entry applied to ws.dinput (which it overwrites).
void tp_enter_backward(Backend& be, const TpPlace& tp, const Tensor& dx);
// Exit forward: out += the reduction of the partial sums in ws.partial (which it overwrites).
void tp_exit(Backend& be, const TpPlace& tp, const Tensor& out);
// Exit backward: the gradient the row-parallel block reads (dout itself, or dout all-gathered
// into ws.partial).
Tensor tp_exit_backward(const TpPlace& tp, const Tensor& dout);
// ws.partial / ws.dinput viewed as [rows, D] for a block's partial sums.
Tensor tp_partial(const TpPlace& tp);
Tensor tp_dinput(const TpPlace& tp);

}  // namespace sy
