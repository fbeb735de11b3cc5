// The model's weights as an HDF5 file: one dataset per parameter (and router bias), named by its
// path (e.g. layers.3.moe.experts.5.w1), with its shape; docs/weights-format.md.
#pragma once

#include <map>
#include <string>

#include "engine/model.h"
#include "parallel/comm.h"

namespace sy {

// The groups whose ranks hold different parts of the model.
struct WeightsGather {
  Communicator* tp = nullptr;  // each TP rank holds a block of rows of every split matrix
  Communicator* ep = nullptr;  // each EP rank holds its own experts
  Communicator* etp = nullptr;  // each ETP rank holds a block of rows of every matrix of those experts
  Communicator* pp = nullptr;   // each pipeline stage holds its layers (stage 0 collects them)
};

// Writes the whole model. Under tensor, expert (tensor) or pipeline parallelism call it on every
// rank (collective): the blocks, expert slices and experts are all-gathered, the stages' arrays
// sent to stage 0, and only the rank with `write` set (a stage-0 rank) writes the file.
void save_weights(Model& model, const std::string& path, const std::map<std::string, std::string>& attrs = {},
                  WeightsGather groups = {}, bool write = true);
// Every parameter and buffer must be present with its whole shape; a ConfigError names the first
// that is not. At any parallel layout (train.init_weights): each rank takes its own block of
// every array (its TP rows, its experts, its stage's layers); one rank takes them whole.
void load_weights(Model& model, const std::string& path);

}  // namespace sy
