// The decoder-only MoE transformer: embedding, n_layers blocks (attention + dense or MoE FFN),
// final RMSNorm, LM head, mean cross-entropy. Forward and backward are written out by hand over
// the backend's ops; activations live in buffers the layers keep between steps.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/layers/attention_layer.h"
#include "engine/layers/ffn_block.h"
#include "engine/model_config.h"
#include "engine/params.h"

namespace sy {

// One micro-batch of token windows on the host: inputs and next-token targets, [batch * seq].
struct HostBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> inputs, targets;
};

struct LossParts {
  double ce = 0;   // mean cross-entropy over the micro-batch's tokens (nats)
  double aux = 0;  // load-balance loss, summed over MoE layers, coefficient applied
  double z = 0;    // router z-loss, summed over MoE layers, coefficient applied
  std::vector<MoeForwardStats> moe;  // one per MoE layer, in layer order
  double total() const { return ce + aux + z; }
};

// Pipeline parallelism: the runs of layers ("chunks", one per virtual stage) this rank holds, in
// the order the model runs them; `first`: chunk 0 starts the model (the embedding is here);
// `last`: the last chunk ends it (final norm, LM head and loss are here). No chunks: the whole
// model as one chunk, first and last.
struct PipePlace {
  std::vector<std::pair<int64_t, int64_t>> chunks;  // [begin, end) global layer indices
  bool first = true, last = true;
};

// Which part of the model an instance holds, and how its flat buffers are padded: a rank under
// expert parallelism holds the dense parameters and its own run of experts (under expert tensor
// parallelism, its slice of each: ExpertRange); each segment of the flat buffers is padded to a
// multiple of the group it is sharded over (ZeRO).
struct ModelShard {
  ExpertRange experts;  // default: every expert
  int64_t dense_pad = 1, expert_pad = 1;
  // Tensor (and sequence) parallelism: the comm must outlive the model. Under TP the embedding
  // and the LM head split over the vocabulary, and the loss is a vocabulary-parallel
  // cross-entropy that never gathers the logits.
  TpPlace tp;
  PipePlace pipe;
};

// What the model tells, during a backward, a listener that wants parameters' gradients as soon
// as they are complete: after the head, the final norm's and an untied head's; after each layer's
// backward (its attention and feed-forward, token exchanges included), the layer's; after the
// lookup, the embedding's. A data-parallel reducer starts reducing them while the backward goes
// on (parallel/data_parallel.h); the gradients are complete for this backward only (a later
// micro-batch's backward adds to them).
class GradientListener {
 public:
  virtual ~GradientListener() = default;
  virtual void gradients_ready(std::span<const int> param_ids) = 0;
};

class Model {
 public:
  Model(const ModelConfig& cfg, Backend& be, DType dtype, uint64_t seed, ModelShard shard = {});

  // Forward only (evaluation); the logits stay available through logits().
  LossParts forward(const HostBatch& b);
  // Forward and backward: parameter gradients += loss_scale * d(total loss)/d(parameter).
  LossParts forward_backward(const HostBatch& b, double loss_scale);

  // Pipeline stages: chunk c's forward (from the batch's ids on the first chunk of the first
  // stage, else from chunk_input(c), which the caller fills), ending in the loss on the last chunk
  // of the last stage (ce: 0 elsewhere); its output is chunk_output(c). `recompute`: the second
  // forward of a micro-batch whose activations another micro-batch's forward overwrote, to refill
  // them for its backward: no side effect (the router load counted for the aux-free bias is
  // left as it was). chunk_backward(c) runs the backward of the micro-batch whose forward ran
  // last on chunk c: from the loss on the last chunk of the last stage, else from chunk_grad(c),
  // which the caller fills with the gradient of chunk_output(c); it leaves there the gradient of
  // chunk_input(c).
  int chunks() const { return int(pipe_.chunks.size()); }
  LossParts chunk_forward(int c, const HostBatch& b, bool recompute = false);
  void chunk_backward(int c, const HostBatch& b, double loss_scale);
  const Tensor& chunk_input(int c) const { return resid_[2 * pipe_.chunks[c].first]; }
  const Tensor& chunk_output(int c) const { return resid_[2 * pipe_.chunks[c].second]; }
  const Tensor& chunk_grad() const { return dresid_; }
  // Sizes the activation buffers for micro-batches of `batch` sequences of `seq` tokens.
  void prepare(int64_t batch, int64_t seq) { ensure(batch, seq); }
  bool holds_layer(int64_t l) const { return attn_[l] != nullptr; }
  const PipePlace& pipe() const { return pipe_; }

  // Told during every backward as the gradients of parameters become complete for it (null: no
  // one is told); the listener must outlive the backward passes.
  void set_gradient_listener(GradientListener* l) { listener_ = l; }

  // Aux-loss-free balancing: moves every MoE layer's router bias (no-op when the rate is 0).
  void update_router_biases();

  const ModelConfig& config() const { return cfg_; }
  ParamStore& params() { return ps_; }
  const ParamStore& params() const { return ps_; }
  Backend& backend() { return be_; }
  // The activations' type (and the weight copy's); the parameters and gradients are
  // param_dtype(): float32 under bfloat16 mixed precision, else the same.
  DType dtype() const { return dtype_; }
  DType param_dtype() const { return accum_dtype(dtype_); }  // the same mapping: bf16 keeps float32
  const Tensor& logits() const { return logits_; }
  std::vector<MoeLayer*> moe_layers();
  void set_experts_impl(ExpertsImpl impl);
  // Non-trained state that belongs with the weights: the router biases, by name.
  std::vector<std::pair<std::string, Tensor>> buffers();

  // ModelConfig's counts (engine/model_config.h), for the whole model.
  int64_t active_params_per_token() const;
  // Parameters of the layers, embedding and head this instance holds, counting every expert of
  // its MoE layers (whatever part of them it holds); the whole model's without pipeline stages.
  int64_t total_params() const;
  double train_flops_per_token() const;

 private:
  void ensure(int64_t batch, int64_t seq);
  double vocab_parallel_loss();
  void upload_batch(const HostBatch& b);
  LossParts run_forward(int c, bool recompute);
  void run_backward(int c, double loss_scale);
  void tell(const std::vector<int>& ids);
  bool first_chunk(int c) const { return c == 0 && pipe_.first; }
  bool last_chunk(int c) const { return c + 1 == chunks() && pipe_.last; }

  ModelConfig cfg_;
  Backend& be_;
  DType dtype_;
  TpPlace tp_;
  PipePlace pipe_;
  std::unique_ptr<TpWorkspace> tp_ws_;  // shared by every TP layer (tp_.ws points here)
  int64_t vocab_begin_ = 0, vocab_local_ = 0;  // this rank's vocabulary rows
  ParamStore ps_;
  int embed_ = -1, final_norm_ = -1, lm_head_ = -1;  // -1: on another pipeline stage
  std::vector<std::unique_ptr<AttentionLayer>> attn_;  // by global layer; null: on another stage
  std::vector<std::unique_ptr<FfnBlock>> ffn_;
  std::vector<std::vector<int>> layer_params_;  // by global layer: its parameters' ids
  GradientListener* listener_ = nullptr;

  int64_t batch_ = 0, seq_ = 0;
  AttentionInputs rope_;
  Tensor ids_, targets_;
  std::vector<int32_t> ids_host_, targets_host_;
  // Tensor parallelism: ids and targets as rows of this rank's vocabulary shard (-1: elsewhere),
  // CE row statistics.
  Tensor ids_local_, targets_local_, row_max_, sum_exp_, target_logit_;
  std::vector<Tensor> resid_;  // 2 * n_layers + 1 residual-stream slots, [N, D] each; held chunks' only
  Tensor xf_, rstd_f_, logits_, lse_, dlogits_, dxf_, dresid_;
};

}  // namespace sy
