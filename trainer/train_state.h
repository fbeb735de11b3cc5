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

// `writes_value(p)`: this rank writes parameter p (one rank of the group p is replicated over).
// `write_buffers`: this rank writes the router biases (one rank in all: every rank holds them).
// `writes_moments(p)`: this rank writes the moments of parameter p that lie in its optimizer
// pieces (under ZeRO every rank, the shards being disjoint; otherwise one rank per replica
// group). Exactly one rank must claim each element.
StateSnapshot snapshot_state(Model& model, const Optimizer& opt, bool write_buffers,
                             const std::function<bool(const ParamInfo&)>& writes_value,
                             const std::function<bool(const ParamInfo&)>& writes_moments);

// Loads the parameters this rank holds, router biases and its share of the optimizer moments
// (by global names, so any layout that wrote them will do); returns the
// step the checkpoint was taken after. ConfigError naming the tensor if one is missing or of
// another shape.
int64_t restore_state(const CheckpointReader& ckpt, Model& model, Optimizer& opt);

// The checkpoint directory a run resumes from ("" for a fresh start): checkpoint.resume = auto
// takes the newest that verifies under out_dir, none starts fresh, anything else is a path.
std::string resume_directory(const std::string& resume, const std::string& out_dir);

}  // namespace sy
