// ParamStore: every trainable parameter of a model lives in one flat buffer, and its gradient in
// a second flat buffer of the same layout. Flat buffers make the optimizer, gradient clipping,
// bucketed all-reduce and ZeRO sharding work on plain ranges instead of lists of tensors.
// Parameters are laid out in declaration order without padding, so parameters declared one
// after another (an expert's w1 then w3) form one contiguous, jointly addressable matrix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace sy {

// What a parameter is, for weight-decay rules and initialisation.
enum class ParamKind : uint8_t { Matrix, Norm, Embedding };

struct ParamInfo {
  std::string name;
  Shape shape;
  ParamKind kind = ParamKind::Matrix;
  int64_t offset = 0;  // elements into the flat buffers
  int64_t numel = 0;
  double init_std = 0;  // Matrix/Embedding: N(0, init_std); Norm: ones
  bool expert = false;  // belongs to a routed expert (reduced over the expert-data-parallel group)
};

class ParamStore {
 public:
  int add(const std::string& name, Shape shape, ParamKind kind, double init_std, bool expert = false);
  // Allocates the flat value and gradient buffers (zeroed), padded to a multiple of
  // `pad_multiple` elements so that they split into equal shards (ZeRO).
  void allocate(Backend& be, DType dtype, int64_t pad_multiple = 1);
  // Deterministic initialisation from the seed (independent of the backend and thread count).
  void initialize(Backend& be, uint64_t seed);

  int64_t total_numel() const { return total_; }
  int64_t padded_numel() const { return values_.numel(); }
  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int id) const { return infos_.at(id); }
  int find(const std::string& name) const;  // -1 if absent
  Tensor value(int id) const { return values_.view(infos_[id].offset, infos_[id].shape); }
  Tensor grad(int id) const { return grads_.view(infos_[id].offset, infos_[id].shape); }
  // `count` consecutive parameters starting at `first` as one [rows, cols] matrix (they must share
  // the column count): e.g. an expert's w1 and w3 as the fused [2F, D] gate|up weight.
  Tensor fused_value(int first, int count) const { return fused(values_, first, count); }
  Tensor fused_grad(int first, int count) const { return fused(grads_, first, count); }
  // The whole flat buffers, padding included (the padding stays zero).
  const Tensor& values() const { return values_; }
  const Tensor& grads() const { return grads_; }

 private:
  Tensor fused(const Tensor& flat, int first, int count) const;
  std::vector<ParamInfo> infos_;
  int64_t total_ = 0;
  Tensor values_, grads_;
};

}  // namespace sy
