// The decoder-only MoE transformer: embedding, n_layers blocks (attention + dense or MoE FFN),
// final RMSNorm, LM head, mean cross-entropy. Forward and backward are written out by hand over
// the backend's ops; activations live in buffers the layers keep between steps.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/layers/attention_block.h"
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
};

class Model {
 public:
  Model(const ModelConfig& cfg, Backend& be, DType dtype, uint64_t seed, ModelShard shard = {});

  // Forward only (evaluation); the logits stay available through logits().
  LossParts forward(const HostBatch& b);
  // Forward and backward: parameter gradients += loss_scale * d(total loss)/d(parameter).
  LossParts forward_backward(const HostBatch& b, double loss_scale);
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

  // Parameters one token multiplies by (attention, router, top_k + shared experts, dense FFNs,
  // LM head; not the embedding lookup or norms), and the training FLOPs per token:
  // 6 * active + 12 * n_layers * n_heads * head_dim * seq_len (docs/model.md).
  int64_t active_params_per_token() const;
  // Parameters of the whole model (every expert), whatever part this instance holds.
  int64_t total_params() const;
  double train_flops_per_token() const;

 private:
  void ensure(int64_t batch, int64_t seq);
  double vocab_parallel_loss();
  void upload_batch(const HostBatch& b);
  LossParts run_forward();
  void run_backward(const LossParts& parts, double loss_scale);

  ModelConfig cfg_;
  Backend& be_;
  DType dtype_;
  TpPlace tp_;
  std::unique_ptr<TpWorkspace> tp_ws_;  // shared by every TP layer (tp_.ws points here)
  int64_t vocab_begin_ = 0, vocab_local_ = 0;  // this rank's vocabulary rows
  ParamStore ps_;
  int embed_, final_norm_, lm_head_;
  std::vector<std::unique_ptr<AttentionBlock>> attn_;
  std::vector<std::unique_ptr<FfnBlock>> ffn_;

  int64_t batch_ = 0, seq_ = 0;
  RopeInputs rope_;
  Tensor ids_, targets_;
  std::vector<int32_t> ids_host_, targets_host_;
  // Tensor parallelism: ids and targets as rows of this rank's vocabulary shard (-1: elsewhere),
  // CE row statistics.
  Tensor ids_local_, targets_local_, row_max_, sum_exp_, target_logit_;
  std::vector<Tensor> resid_;  // 2 * n_layers + 1 residual-stream states, [N, D] each
  Tensor xf_, rstd_f_, logits_, lse_, dlogits_, dxf_, dresid_;
};

}  // namespace sy
