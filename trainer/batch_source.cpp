#include "trainer/batch_source.h"

namespace sy {

BatchSource::BatchSource(const std::string& path, int64_t seq_len, uint64_t seed, int64_t model_vocab)
    : file_(std::make_unique<TokenFile>(path)), seq_len_(seq_len) {
  file_->check_vocab(static_cast<uint32_t>(model_vocab));
  sampler_ = std::make_unique<WindowSampler>(*file_, seq_len, seed);
}

namespace {
// A batch of `batch` sequences, sequence i written by fill(i, inputs, targets).
template <class Fill> HostBatch make_batch(int64_t batch, int64_t seq, Fill&& fill) {
  HostBatch b;
  b.batch = batch;
  b.seq = seq;
  b.inputs.resize(batch * seq);
  b.targets.resize(batch * seq);
  for (int64_t i = 0; i < batch; ++i) fill(i, b.inputs.data() + i * seq, b.targets.data() + i * seq);
  return b;
}
}  // namespace

HostBatch BatchSource::sampled(int64_t first_sample, int64_t batch) const {
  return make_batch(batch, seq_len_, [&](int64_t i, int32_t* in, int32_t* tg) { sampler_->sample(first_sample + i, in, tg); });
}

HostBatch BatchSource::in_order(int64_t first_window, int64_t batch) const {
  return make_batch(batch, seq_len_,
                    [&](int64_t i, int32_t* in, int32_t* tg) { sampler_->window_in_order(first_window + i, in, tg); });
}

int64_t BatchSource::windows() const { return (int64_t(file_->size()) - 1) / seq_len_; }

}  // namespace sy
