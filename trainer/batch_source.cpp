#include "trainer/batch_source.h"

namespace sy {

BatchSource::BatchSource(const std::string& path, int64_t seq_len, uint64_t seed, int64_t model_vocab)
    : file_(std::make_unique<TokenFile>(path)), seq_len_(seq_len) {
  file_->check_vocab(static_cast<uint32_t>(model_vocab));
  sampler_ = std::make_unique<WindowSampler>(*file_, seq_len, seed);
}

HostBatch BatchSource::sampled(int64_t first_sample, int64_t batch) const {
  HostBatch b;
  b.batch = batch;
  b.seq = seq_len_;
  b.inputs.resize(batch * seq_len_);
  b.targets.resize(batch * seq_len_);
  for (int64_t i = 0; i < batch; ++i)
    sampler_->sample(first_sample + i, b.inputs.data() + i * seq_len_, b.targets.data() + i * seq_len_);
  return b;
}

HostBatch BatchSource::in_order(int64_t first_window, int64_t batch) const {
  HostBatch b;
  b.batch = batch;
  b.seq = seq_len_;
  b.inputs.resize(batch * seq_len_);
  b.targets.resize(batch * seq_len_);
  for (int64_t i = 0; i < batch; ++i)
    sampler_->window_in_order(first_window + i, b.inputs.data() + i * seq_len_, b.targets.data() + i * seq_len_);
  return b;
}

int64_t BatchSource::windows() const { return (int64_t(file_->size()) - 1) / seq_len_; }

}  // namespace sy
