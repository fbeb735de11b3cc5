// The whole training state as checkpoint pieces, and back: parameters (full, written once per
// data-parallel replica set), AdamW moments (each rank's ZeRO shard, cut along parameter
// boundaries so every tensor keeps its global name and shape), router biases, and the step.
// The data order needs no state of its own: the sampler is a pure function of (seed, sample
// index), and the sample index is a function of the step.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "engine/model.h"
#include "optim/optimizer.h"

namespace sy {

// Host copies that outlive the save call (the pieces point into them).
struct StateSnapshot {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<TensorPiece> pieces;
};

// `write_replicated`: this rank writes the tensors every data-parallel rank holds identically
// (parameters, router biases); exactly one rank per replica set passes true.
// `writes_moments(p)`: this rank writes the moments of parameter p that lie in its optimizer
// shard (under ZeRO every rank, the shards being disjoint; otherwise one rank, and for an
// expert-parallel expert the rank that owns it). Exactly one rank must claim each element.
StateSnapshot snapshot_state(Model& model, const Optimizer& opt, bool write_replicated,
                             const std::function<bool(const ParamInfo&)>& writes_moments);

// Loads parameters, router biases and this rank's share of the optimizer moments; returns the
// step the checkpoint was taken after. ConfigError naming the tensor if one is missing or of
// another shape.
int64_t restore_state(const CheckpointReader& ckpt, Model& model, Optimizer& opt);

// The checkpoint directory a run resumes from ("" for a fresh start): checkpoint.resume = auto
// takes the newest that verifies under out_dir, none starts fresh, anything else is a path.
std::string resume_directory(const std::string& resume, const std::string& out_dir);

}  // namespace sy
