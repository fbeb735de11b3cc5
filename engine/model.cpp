#include "engine/model.h"

#include <cmath>
#include <stdexcept>

#include "engine/host_io.h"

namespace sy {

Model::Model(const ModelConfig& cfg, Backend& be, DType dtype, uint64_t seed, ModelShard shard)
    : cfg_(cfg), be_(be), dtype_(dtype), tp_(shard.tp), pipe_(shard.pipe) {
  cfg_.validate();
  if (pipe_.chunks.empty()) pipe_ = PipePlace{{{0, cfg_.n_layers}}, true, true};
  for (size_t c = 0; c < pipe_.chunks.size(); ++c) {
    const auto [b, e] = pipe_.chunks[c];
    if (b < 0 || e > cfg_.n_layers || b >= e || (c > 0 && b < pipe_.chunks[c - 1].second))
      throw std::invalid_argument("pipeline chunk " + std::to_string(c) + " holds layers [" + std::to_string(b) + ", " +
                                  std::to_string(e) + ") of " + std::to_string(cfg_.n_layers) +
                                  ": chunks must be non-empty, ascending and disjoint");
  }
  if (pipe_.first && pipe_.chunks[0].first != 0) throw std::invalid_argument("the first pipeline stage must start at layer 0");
  if (pipe_.last && pipe_.chunks.back().second != cfg_.n_layers)
    throw std::invalid_argument("the last pipeline stage must end at the last layer");
  const int t = tp_.size();
  auto need = [&](int64_t v, const char* what) {
    if (v % t != 0)
      throw std::invalid_argument(std::string(what) + "=" + std::to_string(v) + " is not divisible by tp=" +
                                  std::to_string(t));
  };
  need(cfg_.vocab_size, "model.vocab_size");
  need(cfg_.n_heads, "model.n_heads");
  need(cfg_.n_kv_heads, "model.n_kv_heads");
  if (cfg_.first_dense_layers > 0 || cfg_.n_experts == 0) need(cfg_.d_ff, "model.d_ff");
  if (cfg_.n_shared_experts > 0) need(cfg_.expert_ffn_dim, "model.expert_ffn_dim");
  tp_ws_ = std::make_unique<TpWorkspace>();
  tp_.ws = tp_ws_.get();
  vocab_local_ = cfg_.vocab_size / t;
  vocab_begin_ = tp_.rank() * vocab_local_;
  const ParamSplit rows{TpSplit::Rows, tp_.rank(), t};
  // A tied embedding on a last stage that is not also the first is a second copy of the table,
  // kept equal by the caller (the same initialisation, gradients summed over the two stages).
  if (pipe_.first || (pipe_.last && cfg_.tie_embeddings))
    embed_ = ps_.add("embed.weight", {vocab_local_, cfg_.d_model}, ParamKind::Embedding, cfg_.init_std, -1, rows);
  attn_.resize(size_t(cfg_.n_layers));
  ffn_.resize(size_t(cfg_.n_layers));
  layer_params_.resize(size_t(cfg_.n_layers));
  for (const auto& [b, e] : pipe_.chunks)
    for (int64_t l = b; l < e; ++l) {
      const int first = int(ps_.infos().size());
      attn_[l] = make_attention_layer(ps_, cfg_, l, tp_);
      ffn_[l] = std::make_unique<FfnBlock>(ps_, cfg_, l, shard.experts, tp_);
      for (int id = first; id < int(ps_.infos().size()); ++id) layer_params_[l].push_back(id);
    }
  if (pipe_.last) {
    final_norm_ = ps_.add("final_norm.weight", {cfg_.d_model}, ParamKind::Norm, 0, -1,
                          {tp_.seq() ? TpSplit::Partial : TpSplit::Replicated, tp_.rank(), t});
    lm_head_ = cfg_.tie_embeddings ? embed_
                                   : ps_.add("lm_head.weight", {vocab_local_, cfg_.d_model}, ParamKind::Matrix,
                                             cfg_.init_std, -1, rows);
  }
  // Mixed precision: bfloat16 activations and weight copy, float32 master weights and gradients.
  ps_.allocate(be_, param_dtype(), shard.dense_pad, shard.expert_pad);
  ps_.initialize(be_, seed);
  if (dtype_ != param_dtype()) ps_.add_compute_copy(be_, dtype_);
  for (auto& f : ffn_)
    if (f) f->allocate_buffers(be_, dtype_);
}

void Model::ensure(int64_t batch, int64_t seq) {
  if (batch == batch_ && seq == seq_) return;
  if (seq > cfg_.seq_len)
    throw std::invalid_argument("sequence of " + std::to_string(seq) + " tokens exceeds model.seq_len=" +
                                std::to_string(cfg_.seq_len));
  const int64_t n = batch * seq, d = cfg_.d_model, v = vocab_local_, hd = cfg_.rope_dim();
  if (tp_.seq() && n % tp_.size() != 0)
    throw std::invalid_argument("sequence parallelism needs batch * seq (" + std::to_string(n) +
                                ") divisible by tp=" + std::to_string(tp_.size()));
  const int64_t nl = tp_.seq() ? n / tp_.size() : n;  // residual-stream rows on this rank
  batch_ = batch;
  seq_ = seq;

  // RoPE tables in double on the host, so float32 and float64 models rotate by the same angles
  // (YaRN scales the frequencies and both tables: ModelConfig::rope_inv_freq, rope_amplitude).
  std::vector<double> c(seq * (hd / 2)), s(seq * (hd / 2)), inv_freq(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) inv_freq[i] = cfg_.rope_inv_freq(i);
  const double amp = cfg_.rope_amplitude();
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double angle = double(t) * inv_freq[i];
      c[t * (hd / 2) + i] = amp * std::cos(angle);
      s[t * (hd / 2) + i] = amp * std::sin(angle);
    }
  MemScope inputs(be_, MemCategory::Other);
  rope_.cos = be_.empty({seq, hd / 2}, accum_dtype(dtype_));
  rope_.sin = be_.empty({seq, hd / 2}, accum_dtype(dtype_));
  upload_f64(be_, c, rope_.cos);
  upload_f64(be_, s, rope_.sin);
  std::vector<int32_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[i] = int32_t(i % seq);
  rope_.positions = be_.empty({n}, DType::I32);
  be_.upload(pos.data(), rope_.positions);
  if (cfg_.attention_bias) {
    rope_.ones = be_.empty({n, 1}, dtype_);
    be_.fill(rope_.ones, 1.0);
  }

  ids_ = be_.empty({n}, DType::I32);
  targets_ = be_.empty({n}, DType::I32);
  // The residual stream of the held chunks only (a pipeline stage's other slots stay empty):
  // chunk [b, e) reads slot 2b and writes up to slot 2e.
  resid_.assign(size_t(2 * cfg_.n_layers + 1), Tensor());
  {
    MemScope kept(be_, MemCategory::Activations);  // the residual stream: the layers' inputs
    for (const auto& [b, e] : pipe_.chunks)
      for (int64_t i = 2 * b; i <= 2 * e; ++i) resid_[size_t(i)] = be_.empty({nl, d}, dtype_);
  }
  MemScope head(be_, MemCategory::HeadActivations);
  if (pipe_.last) {  // the final norm, LM head and loss run on the last stage only
    xf_ = be_.empty({nl, d}, dtype_);
    rstd_f_ = be_.empty({nl}, accum_dtype(dtype_));
    logits_ = be_.empty({n, v}, dtype_);
    lse_ = be_.empty({n}, accum_dtype(dtype_));
  }
  if (tp_.on()) {
    ids_local_ = be_.empty({n}, DType::I32);
    targets_local_ = be_.empty({n}, DType::I32);
    if (pipe_.last) {
      row_max_ = be_.empty({n}, accum_dtype(dtype_));
      sum_exp_ = be_.empty({n}, accum_dtype(dtype_));
      target_logit_ = be_.empty({n}, accum_dtype(dtype_));
    }
  }
  MemScope scratch(be_, MemCategory::Workspace);
  if (pipe_.last) {
    dlogits_ = be_.empty({n, v}, dtype_);
    dxf_ = be_.empty({nl, d}, dtype_);
  }
  dresid_ = be_.empty({nl, d}, dtype_);
  *tp_ws_ = TpWorkspace{};
  if (tp_.on()) {
    tp_ws_->partial = be_.empty({n, d}, dtype_);
    tp_ws_->dinput = be_.empty({n, d}, dtype_);
    tp_ws_->local = be_.empty({nl, d}, dtype_);
    if (tp_.seq()) tp_ws_->gathered = be_.empty({n, d}, dtype_);
  }
}

void Model::upload_batch(const HostBatch& b) {
  const int64_t n = b.batch * b.seq;
  if (int64_t(b.inputs.size()) != n || int64_t(b.targets.size()) != n)
    throw std::invalid_argument("batch holds " + std::to_string(b.inputs.size()) + " inputs for " +
                                std::to_string(b.batch) + " x " + std::to_string(b.seq) + " tokens");
  for (int32_t t : b.inputs)
    if (t < 0 || t >= cfg_.vocab_size) throw std::out_of_range("token id " + std::to_string(t) + " outside the vocabulary");
  for (int32_t t : b.targets)
    if (t < 0 || t >= cfg_.vocab_size) throw std::out_of_range("target id " + std::to_string(t) + " outside the vocabulary");
  ensure(b.batch, b.seq);
  be_.upload(b.inputs.data(), ids_);
  be_.upload(b.targets.data(), targets_);
  if (tp_.on()) {
    auto local = [&](const std::vector<int32_t>& ids, const Tensor& dst) {
      std::vector<int32_t> l(ids.size());
      for (size_t i = 0; i < ids.size(); ++i)
        l[i] = ids[i] >= vocab_begin_ && ids[i] < vocab_begin_ + vocab_local_ ? int32_t(ids[i] - vocab_begin_) : -1;
      be_.upload(l.data(), dst);
    };
    local(b.inputs, ids_local_);
    local(b.targets, targets_local_);
  }
}

// lse = global max + log(sum over shards of sum_j exp(logit - global max)); the loss needs the
// target's logit from the shard that holds it. Three reductions of [N] rows, never the logits.
double Model::vocab_parallel_loss() {
  be_.logits_row_max(logits_, row_max_);
  tp_.comm->all_reduce_max(row_max_);
  be_.cross_entropy_shard_sums(logits_, targets_local_, row_max_, sum_exp_, target_logit_);
  tp_.comm->all_reduce_sum(sum_exp_);
  tp_.comm->all_reduce_sum(target_logit_);
  const std::vector<double> mx = download_f64(be_, row_max_), se = download_f64(be_, sum_exp_),
                            tl = download_f64(be_, target_logit_);
  std::vector<double> lse(mx.size());
  double total = 0;
  for (size_t i = 0; i < mx.size(); ++i) {
    lse[i] = mx[i] + std::log(se[i]);
    total += lse[i] - tl[i];
  }
  upload_f64(be_, lse, lse_);
  return total;
}

LossParts Model::run_forward(int c, bool recompute) {
  LossParts parts;
  ps_.refresh_compute_copy(be_);  // the masters may have moved since (optimizer, restore, rollback)
  const auto [l0, l1] = pipe_.chunks[c];
  if (first_chunk(c)) {
    if (!tp_.on()) {
      be_.embedding_forward(ps_.weight(embed_), ids_, resid_[0]);
    } else {
      // Vocabulary-parallel lookup: rows of other shards are zero; the sum over TP is the table's
      // row (all-reduced, or reduce-scattered into this rank's sequence rows).
      be_.embedding_forward(ps_.weight(embed_), ids_local_, tp_partial(tp_));
      be_.fill(resid_[0], 0);
      tp_exit(be_, tp_, resid_[0]);
    }
  }
  for (int64_t l = l0; l < l1; ++l) {
    attn_[l]->forward(be_, resid_[2 * l], resid_[2 * l + 1], rope_, batch_, seq_);
    MoeLayer* moe = ffn_[l]->moe();
    std::vector<int64_t> load;  // a recompute must leave the load counted for the bias as it was
    if (recompute && moe) load = moe->pending_load();
    MoeForwardStats st = ffn_[l]->forward(be_, resid_[2 * l + 1], resid_[2 * l + 2]);
    if (recompute && moe) moe->pending_load() = std::move(load);
    if (moe) {
      parts.aux += st.aux_loss;
      parts.z += st.z_loss;
      parts.moe.push_back(std::move(st));
    }
  }
  if (!last_chunk(c)) return parts;
  be_.rmsnorm_forward(resid_.back(), ps_.weight(final_norm_), cfg_.norm_eps, xf_, rstd_f_);
  be_.gemm(tp_enter(tp_, xf_), false, ps_.weight(lm_head_), true, logits_, 1, 0);
  const double sum = tp_.on() ? vocab_parallel_loss() : be_.cross_entropy_forward(logits_, targets_, lse_);
  parts.ce = sum / double(batch_ * seq_);
  return parts;
}

void Model::run_backward(int c, double loss_scale) {
  const auto [l0, l1] = pipe_.chunks[c];
  if (last_chunk(c)) {
    const double n = double(batch_ * seq_);
    be_.fill(dlogits_, 0);
    be_.cross_entropy_backward(logits_, tp_.on() ? targets_local_ : targets_, lse_, loss_scale / n, dlogits_);
    be_.gemm(dlogits_, true, tp_enter(tp_, xf_), false, ps_.grad(lm_head_), 1, 1);  // re-gathered with sp
    if (!tp_.on()) {
      be_.gemm(dlogits_, false, ps_.weight(lm_head_), false, dxf_, 1, 0);
    } else {
      be_.gemm(dlogits_, false, ps_.weight(lm_head_), false, tp_dinput(tp_), 1, 0);
      be_.fill(dxf_, 0);
      tp_enter_backward(be_, tp_, dxf_);
    }
    be_.fill(dresid_, 0);
    be_.rmsnorm_backward(dxf_, resid_.back(), ps_.weight(final_norm_), rstd_f_, dresid_, ps_.grad(final_norm_));
    // A tied head's table is complete only after the lookup's gradient (below).
    if (lm_head_ == embed_) tell({final_norm_});
    else tell({final_norm_, lm_head_});
  }
  // Each block adds its branch's input gradient into dresid_ in place, walking the residual
  // stream backwards.
  for (int64_t l = l1 - 1; l >= l0; --l) {
    ffn_[l]->backward(be_, resid_[2 * l + 1], dresid_, loss_scale);
    attn_[l]->backward(be_, resid_[2 * l], dresid_, rope_);
    tell(layer_params_[l]);
  }
  if (!first_chunk(c)) return;
  if (!tp_.on()) {
    be_.embedding_backward(dresid_, ids_, ps_.grad(embed_));
  } else {
    const Tensor demb = tp_exit_backward(tp_, dresid_);
    be_.embedding_backward(demb, ids_local_, ps_.grad(embed_));
  }
  tell({embed_});
}

void Model::tell(const std::vector<int>& ids) {
  if (listener_) listener_->gradients_ready(ids);
}

LossParts Model::forward(const HostBatch& b) {
  if (chunks() != 1 || !pipe_.first || !pipe_.last)
    throw std::logic_error("Model::forward on a pipeline stage; run the stages' chunk_forward in turn");
  upload_batch(b);
  return run_forward(0, false);
}

LossParts Model::forward_backward(const HostBatch& b, double loss_scale) {
  LossParts parts = forward(b);
  run_backward(0, loss_scale);
  return parts;
}

LossParts Model::chunk_forward(int c, const HostBatch& b, bool recompute) {
  upload_batch(b);
  return run_forward(c, recompute);
}

void Model::chunk_backward(int c, const HostBatch& b, double loss_scale) {
  upload_batch(b);  // the targets (last stage) and ids (first) of this micro-batch
  run_backward(c, loss_scale);
}

void Model::update_router_biases() {
  for (auto* m : moe_layers()) m->update_bias(be_);
}

std::vector<MoeLayer*> Model::moe_layers() {
  std::vector<MoeLayer*> out;
  for (auto& f : ffn_)
    if (f && f->moe()) out.push_back(f->moe());
  return out;
}

void Model::set_experts_impl(ExpertsImpl impl) {
  for (auto* m : moe_layers()) m->set_experts_impl(impl);
}

std::vector<std::pair<std::string, Tensor>> Model::buffers() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int64_t l = 0; l < cfg_.n_layers; ++l)
    if (auto* m = ffn_[l] ? ffn_[l]->moe() : nullptr) out.emplace_back("layers." + std::to_string(l) + ".moe.router.bias", m->bias());
  return out;
}

int64_t Model::active_params_per_token() const { return cfg_.active_params_per_token(); }

int64_t Model::total_params() const {
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) moe_layers += holds_layer(l) && cfg_.layer_is_moe(l);
  return ps_.dense_global_numel() + moe_layers * cfg_.n_experts * 3 * cfg_.d_model * cfg_.expert_ffn_dim;
}

double Model::train_flops_per_token() const { return cfg_.train_flops_per_token(); }

}  // namespace sy
