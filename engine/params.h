// ParamStore: every trainable parameter of a model lives in one flat buffer, and its gradient in
// a second flat buffer of the same layout. Flat buffers make the optimizer, gradient clipping,
// bucketed all-reduce and ZeRO sharding work on plain ranges instead of lists of tensors.
//
// The buffers have three segments: dense parameters every tensor-parallel rank holds whole,
// dense parameters split over the tensor-parallel ranks, and the routed experts' parameters.
// They reduce, shard and enter the gradient norm over different groups (dense over data
// parallelism, experts over expert-data parallelism), so each segment is padded on its own to
// a multiple of its group's size. Within a segment parameters keep their declaration order
// without gaps, so parameters declared one after another (an expert's w1 then w3) form one
// contiguous, jointly addressable matrix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace sy {

// What a parameter is, for weight-decay rules and initialisation: norm gains start at 1, the
// others at init_std times a normal draw (biases are given 0; attention sinks init_std). Biases
// and sinks decay with the norms (optim.decay_norms).
enum class ParamKind : uint8_t { Matrix, Norm, Embedding, Bias };

// How a parameter lies across the tensor-parallel ranks:
//   Replicated: the same values and the same gradients on every TP rank.
//   Partial   : the same values, but each rank's gradient is a partial sum over its own token
//               rows (norms under sequence parallelism, the router): summed over TP.
//   Rows      : rank r holds rows [r R, (r + 1) R) of the whole [t R, ...] tensor. For a routed
//               expert the split is over the expert-tensor-parallel group instead (r: the ETP
//               rank, t = etp), whatever the TP layout.
enum class TpSplit : uint8_t { Replicated, Partial, Rows };

struct ParamSplit {
  TpSplit tp = TpSplit::Replicated;
  int tp_rank = 0, tp_size = 1;
};

enum class SegmentKind : int { Replicated = 0, TpRows = 1, Expert = 2 };

struct ParamInfo {
  std::string name;
  Shape shape;         // what this rank holds
  Shape global_shape;  // the whole tensor (differs from shape for TpSplit::Rows)
  int64_t global_offset = 0;  // this rank's block's first element in the whole tensor's flattening
  TpSplit tp = TpSplit::Replicated;
  ParamKind kind = ParamKind::Matrix;
  int64_t offset = 0;  // elements into the flat buffers
  int64_t numel = 0;
  double init_std = 0;  // Matrix/Embedding: N(0, init_std); Norm: ones
  // Routed experts only: the expert's global index. Such a parameter lives in the expert segment,
  // and its name holds ".experts.<expert>." (expert_param_name renames it for another index).
  int64_t expert = -1;
  bool is_expert() const { return expert >= 0; }
  SegmentKind segment() const {
    return is_expert() ? SegmentKind::Expert : tp == TpSplit::Rows ? SegmentKind::TpRows : SegmentKind::Replicated;
  }
};

// A contiguous range of the flat buffers: [begin, begin + numel) holds parameters, and the
// segment runs on with zero padding to begin + padded.
struct ParamSegment {
  int64_t begin = 0, numel = 0, padded = 0;
};

// The name of the same parameter of another expert: ".experts.<p.expert>." becomes
// ".experts.<expert>.".
std::string expert_param_name(const ParamInfo& p, int64_t expert);

class ParamStore {
 public:
  // expert: the routed expert's global index, -1 for a dense parameter. shape: what this rank
  // holds (for TpSplit::Rows, its block of rows).
  int add(const std::string& name, Shape shape, ParamKind kind, double init_std, int64_t expert = -1,
          ParamSplit split = {});
  // Lays the parameters out and allocates the flat value and gradient buffers (zeroed); each
  // segment is padded to a multiple of its pad (the dense ones to dense_pad) so that it splits
  // into equal shards (ZeRO).
  void allocate(Backend& be, DType dtype, int64_t dense_pad = 1, int64_t expert_pad = 1);
  // Mixed precision: a second flat buffer of `dtype` (bfloat16) mirroring the values, which the
  // layers compute with (weight(), fused_weight()); the values stay the float32 master weights
  // the optimizer, the gradient reduction and checkpoints work on. refresh_compute_copy()
  // rounds the masters into it (after they changed: the model calls it before each forward).
  void add_compute_copy(Backend& be, DType dtype);
  void refresh_compute_copy(Backend& be);
  bool has_compute_copy() const { return compute_.defined(); }
  // Deterministic initialisation from the seed, independent of the backend, the thread count and
  // of which other parameters this store holds: each parameter's stream is keyed by its name, so
  // a rank holding experts 4..7 initialises them exactly as a rank holding all of them does.
  void initialize(Backend& be, uint64_t seed);

  // Parameters (not padding) in all segments.
  int64_t total_numel() const;
  const ParamSegment& segment(SegmentKind k) const { return segments_[int(k)]; }
  const ParamSegment& expert_segment() const { return segment(SegmentKind::Expert); }
  // Elements of the whole model's dense parameters (every TP block counted).
  int64_t dense_global_numel() const;
  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int id) const { return infos_.at(id); }
  int find(const std::string& name) const;  // -1 if absent
  Tensor value(int id) const { return values_.view(infos_[id].offset, infos_[id].shape); }
  Tensor grad(int id) const { return grads_.view(infos_[id].offset, infos_[id].shape); }
  // `count` consecutive parameters starting at `first` as one [rows, cols] matrix (they must share
  // the column count): e.g. an expert's w1 and w3 as the fused [2F, D] gate|up weight.
  Tensor fused_value(int first, int count) const { return fused(values_, first, count); }
  // What forward and backward compute with: the compute copy if there is one, else the values.
  Tensor weight(int id) const { return weights().view(infos_[id].offset, infos_[id].shape); }
  Tensor fused_weight(int first, int count) const { return fused(weights(), first, count); }
  Tensor fused_grad(int first, int count) const { return fused(grads_, first, count); }
  // The whole flat buffers, padding included (the padding stays zero).
  const Tensor& values() const { return values_; }
  const Tensor& grads() const { return grads_; }
  const Tensor& weights() const { return compute_.defined() ? compute_ : values_; }

 private:
  Tensor fused(const Tensor& flat, int first, int count) const;
  std::vector<ParamInfo> infos_;
  ParamSegment segments_[3];
  Tensor values_, grads_, compute_;
};

}  // namespace sy
