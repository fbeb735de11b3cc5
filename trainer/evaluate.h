// Validation: mean cross-entropy over whole micro-batches of windows read in file order, the
// batches split round-robin over the data-parallel ranks and the sums reduced.
#pragma once

#include <cstdint>

#include "engine/model.h"
#include "parallel/comm.h"
#include "trainer/batch_source.h"

namespace sy {

double evaluate(Model& model, const BatchSource& data, int64_t micro_batch, int64_t max_windows, Communicator& dp);

}  // namespace sy
