// Validation: mean cross-entropy over whole micro-batches of windows read in file order, the
// batches split round-robin over the data-parallel ranks and the sums reduced.
#pragma once

#include <cstdint>
#include <functional>

#include "engine/model.h"
#include "parallel/comm.h"
#include "trainer/batch_source.h"

namespace sy {

// `forward_ce`: the mean cross-entropy of one micro-batch (default: model.forward); under
// pipeline parallelism a pass through every stage whose value is the loss on the last stage and
// 0 elsewhere, summed over the pipeline group `pp`.
double evaluate(Model& model, const BatchSource& data, int64_t micro_batch, int64_t max_windows, Communicator& dp,
                const std::function<double(const HostBatch&)>& forward_ce = {}, Communicator* pp = nullptr);

}  // namespace sy
