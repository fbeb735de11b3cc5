#include "trainer/evaluate.h"

#include <algorithm>

#include "engine/config_error.h"

namespace sy {

double evaluate(Model& model, const BatchSource& data, int64_t micro_batch, int64_t max_windows, Communicator& dp) {
  const int64_t windows = std::min(max_windows, data.windows());
  const int64_t batches = windows / micro_batch;
  if (batches == 0)
    throw ConfigError("evaluation needs at least train.micro_batch=" + std::to_string(micro_batch) +
                      " windows of model.seq_len+1 tokens; use a larger validation file or a smaller micro_batch");
  double sum = 0;
  for (int64_t b = dp.rank(); b < batches; b += dp.size())
    sum += model.forward(data.in_order(b * micro_batch, micro_batch)).ce;
  dp.all_reduce(&sum, 1, CommType::F64, ReduceOp::Sum);
  return sum / double(batches);
}

}  // namespace sy
