#include "trainer/evaluate.h"

#include <algorithm>

#include "engine/config_error.h"

namespace sy {

double evaluate(Model& model, const BatchSource& data, int64_t micro_batch, int64_t max_windows, Communicator& dp,
                const std::function<double(const HostBatch&)>& forward_ce, Communicator* pp) {
  const auto ce_of = [&](const HostBatch& b) { return forward_ce ? forward_ce(b) : model.forward(b).ce; };
  const int64_t windows = std::min(max_windows, data.windows());
  const int64_t batches = windows / micro_batch;
  if (batches == 0)
    throw ConfigError("evaluation needs at least train.micro_batch=" + std::to_string(micro_batch) +
                      " windows of model.seq_len+1 tokens; use a larger validation file or a smaller micro_batch");
  // With expert parallelism a forward pass is collective over the EP group, so every rank runs
  // the same number of them: ranks past the last batch repeat batch 0 and discard the loss.
  bool ep = false;
  // Evaluation must not move the aux-free balancing bias: the loads it routes are set aside.
  std::vector<std::vector<int64_t>> pending;
  for (auto* m : model.moe_layers()) {
    ep = ep || m->expert_parallel();
    pending.push_back(m->pending_load());
  }
  const int64_t rounds = ep ? (batches + dp.size() - 1) / dp.size() : 0;
  double sum = 0;
  int64_t done = 0;
  for (int64_t b = dp.rank(); b < batches; b += dp.size(), ++done)
    sum += ce_of(data.in_order(b * micro_batch, micro_batch));
  for (; done < rounds; ++done) ce_of(data.in_order(0, micro_batch));
  for (size_t l = 0; l < pending.size(); ++l) model.moe_layers()[l]->pending_load() = pending[l];
  dp.all_reduce(&sum, 1, CommType::F64, ReduceOp::Sum);
  if (pp && pp->size() > 1) pp->all_reduce(&sum, 1, CommType::F64, ReduceOp::Sum);
  return sum / double(batches);
}

}  // namespace sy
