#include "engine/model_config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "engine/config_error.h"

namespace sy {

namespace {

std::string num(int64_t v) { return std::to_string(v); }
std::string num(double v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

void positive(const char* key, int64_t v) {
  if (v <= 0) throw ConfigError(std::string("model.") + key + "=" + num(v) + " must be positive; set model." + key + " >= 1");
}
void non_negative(const char* key, int64_t v) {
  if (v < 0) throw ConfigError(std::string("model.") + key + "=" + num(v) + " must not be negative; set model." + key + " >= 0");
}
void finite_positive(const char* key, double v) {
  if (!(std::isfinite(v) && v > 0))
    throw ConfigError(std::string("model.") + key + "=" + num(v) + " must be a positive number");
}
void finite_non_negative(const char* key, double v) {
  if (!(std::isfinite(v) && v >= 0))
    throw ConfigError(std::string("model.") + key + "=" + num(v) + " must be a number >= 0");
}

}  // namespace

int64_t ModelConfig::active_params_per_token() const {
  const int64_t d = d_model, hd = resolved_head_dim(), h = n_heads;
  int64_t attn = d * hd * (2 * n_heads + 2 * n_kv_heads);
  if (mla())  // q (through its latent or not), the kv latent with the shared rotary key, its up-projection, wo
    attn = (q_lora_rank > 0 ? d * q_lora_rank + q_lora_rank * h * qk_head_dim() : d * h * qk_head_dim()) +
           d * (kv_lora_rank + qk_rope_head_dim) + kv_lora_rank * h * (qk_nope_head_dim + v_head_dim) +
           h * v_head_dim * d;
  int64_t n = vocab_size * d;  // LM head (tied or not, it is a matmul per token)
  for (int64_t l = 0; l < n_layers; ++l) {
    n += attn;
    if (layer_is_moe(l))
      n += n_experts * d + (top_k + n_shared_experts) * 3 * d * expert_ffn_dim;
    else
      n += 3 * d * d_ff;
  }
  return n;
}

namespace {
// YaRN's attention temperature term (0.1 m ln s + 1 for s > 1).
double yarn_mscale_of(double factor, double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }
}  // namespace

double ModelConfig::rope_inv_freq(int64_t i) const {
  const double dim = double(rope_dim()), extrapolated = std::pow(rope_theta, -2.0 * double(i) / dim);
  if (rope_scaling != "yarn") return extrapolated;
  // Pairs that turn fewer than beta_slow times over the original context are interpolated
  // (divided by the factor), those turning more than beta_fast times kept, with a linear ramp
  // between (the ramp's ends are dimension indices).
  auto correction_dim = [&](double rotations) {
    return dim * std::log(double(rope_original_max_position) / (rotations * 2 * M_PI)) / (2 * std::log(rope_theta));
  };
  double low = correction_dim(yarn_beta_fast), high = correction_dim(yarn_beta_slow);
  if (yarn_truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, dim - 1);
  if (low == high) high += 0.001;
  const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0), keep = 1 - ramp;
  return extrapolated / rope_factor * (1 - keep) + extrapolated * keep;
}

double ModelConfig::rope_amplitude() const {
  if (rope_scaling != "yarn") return 1.0;
  if (yarn_mscale > 0 && yarn_mscale_all_dim > 0)
    return yarn_mscale_of(rope_factor, yarn_mscale) / yarn_mscale_of(rope_factor, yarn_mscale_all_dim);
  return yarn_mscale_of(rope_factor, 1.0);
}

double ModelConfig::attention_scale() const {
  double s = 1.0 / std::sqrt(double(qk_head_dim()));
  // DeepSeek's YaRN also sharpens the softmax by mscale(factor, mscale_all_dim)^2.
  if (rope_scaling == "yarn" && yarn_mscale_all_dim > 0) s *= std::pow(yarn_mscale_of(rope_factor, yarn_mscale_all_dim), 2);
  return s;
}

double ModelConfig::train_flops_per_token() const {
  // A sliding layer's query sees at most `window` keys: count min(seq_len, window) for it.
  double keys = 0;
  for (int64_t l = 0; l < n_layers; ++l) keys += double(layer_window(l) > 0 ? std::min(seq_len, layer_window(l)) : seq_len);
  return 6.0 * double(active_params_per_token()) + 6.0 * double(n_heads * (qk_head_dim() + v_dim())) * keys;
}

void ModelConfig::validate() const {
  positive("vocab_size", vocab_size);
  // Token ids travel as int32 through the model.
  if (vocab_size > std::numeric_limits<int32_t>::max())
    throw ConfigError("model.vocab_size=" + num(vocab_size) + " exceeds 2^31-1; token ids are int32");
  positive("d_model", d_model);
  positive("n_layers", n_layers);
  positive("n_heads", n_heads);
  positive("n_kv_heads", n_kv_heads);
  positive("seq_len", seq_len);
  non_negative("head_dim", head_dim);
  if (n_heads % n_kv_heads != 0)
    throw ConfigError("model.n_heads=" + num(n_heads) + " is not a multiple of model.n_kv_heads=" + num(n_kv_heads) +
                      "; set n_kv_heads to a divisor of n_heads (grouped-query attention shares each KV head among n_heads/n_kv_heads heads)");
  if (mla()) {
    non_negative("q_lora_rank", q_lora_rank);
    positive("qk_nope_head_dim", qk_nope_head_dim);
    positive("qk_rope_head_dim", qk_rope_head_dim);
    positive("v_head_dim", v_head_dim);
    if (qk_rope_head_dim % 2)
      throw ConfigError("model.qk_rope_head_dim=" + num(qk_rope_head_dim) + " must be even (RoPE rotates pairs of dimensions)");
    if (n_kv_heads != n_heads)
      throw ConfigError("model.n_kv_heads=" + num(n_kv_heads) + " must equal model.n_heads=" + num(n_heads) +
                        " under Multi-head Latent Attention (every head has its own keys and values)");
    if (qk_norm != "none")
      throw ConfigError("model.qk_norm=\"" + qk_norm + "\" does not apply to Multi-head Latent Attention; set qk_norm=\"none\"");
  } else if (q_lora_rank || qk_nope_head_dim || qk_rope_head_dim || v_head_dim) {
    throw ConfigError("model.q_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim are Multi-head Latent "
                      "Attention settings: set model.kv_lora_rank > 0 to use MLA, or remove them");
  }
  non_negative("sliding_window", sliding_window);
  non_negative("full_attention_every", full_attention_every);
  if (rope_scaling != "none" && rope_scaling != "yarn")
    throw ConfigError("model.rope_scaling=\"" + rope_scaling + "\" is not one of \"none\" or \"yarn\"");
  if (rope_scaling == "yarn") {
    finite_positive("rope_factor", rope_factor);
    positive("rope_original_max_position", rope_original_max_position);
    finite_positive("yarn_beta_fast", yarn_beta_fast);
    finite_positive("yarn_beta_slow", yarn_beta_slow);
    finite_non_negative("yarn_mscale", yarn_mscale);
    finite_non_negative("yarn_mscale_all_dim", yarn_mscale_all_dim);
  }
  finite_non_negative("swiglu_limit", swiglu_limit);
  if (swiglu_limit > 0) finite_positive("swiglu_alpha", swiglu_alpha);
  else if (swiglu_alpha != 1.0)
    throw ConfigError("model.swiglu_alpha=" + num(swiglu_alpha) + " only applies to the clamped SwiGLU; set "
                      "model.swiglu_limit > 0 or leave swiglu_alpha at 1");
  if (!mla() && head_dim == 0 && d_model % n_heads != 0)
    throw ConfigError("model.d_model=" + num(d_model) + " is not divisible by model.n_heads=" + num(n_heads) +
                      "; set d_model to a multiple of n_heads or set model.head_dim explicitly");
  // RoPE rotates pairs of dimensions, so each head needs an even width.
  if (!mla() && resolved_head_dim() % 2 != 0) {
    if (head_dim > 0)
      throw ConfigError("model.head_dim=" + num(head_dim) + " must be even (RoPE rotates pairs of dimensions); set an even head_dim");
    throw ConfigError("model.d_model/model.n_heads=" + num(resolved_head_dim()) +
                      " (the head width) must be even (RoPE rotates pairs of dimensions); change d_model or n_heads, or set model.head_dim");
  }
  if (qk_norm != "none" && qk_norm != "head" && qk_norm != "full")
    throw ConfigError("model.qk_norm=\"" + qk_norm + "\" is not one of \"none\", \"head\" (per head, Qwen3) or \"full\" "
                      "(over all heads, OLMoE)");
  finite_positive("rope_theta", rope_theta);
  finite_positive("norm_eps", norm_eps);
  finite_positive("init_std", init_std);

  non_negative("first_dense_layers", first_dense_layers);
  if (first_dense_layers > n_layers)
    throw ConfigError("model.first_dense_layers=" + num(first_dense_layers) + " exceeds model.n_layers=" + num(n_layers) +
                      "; set first_dense_layers <= n_layers");
  non_negative("n_experts", n_experts);
  const bool has_dense = n_experts == 0 || first_dense_layers > 0;
  if (has_dense) positive("d_ff", d_ff);
  else non_negative("d_ff", d_ff);

  // The router settings only matter when some layer is MoE; a dense recipe may keep their defaults.
  if (n_experts > 0 && first_dense_layers < n_layers) {
    positive("top_k", top_k);
    if (top_k > n_experts)
      throw ConfigError("model.top_k=" + num(top_k) + " exceeds model.n_experts=" + num(n_experts) +
                        "; set top_k <= n_experts");
    positive("n_expert_groups", n_expert_groups);
    if (n_experts % n_expert_groups != 0)
      throw ConfigError("model.n_expert_groups=" + num(n_expert_groups) + " does not divide model.n_experts=" +
                        num(n_experts) + "; choose a divisor");
    if (n_expert_groups > 64) throw ConfigError("model.n_expert_groups=" + num(n_expert_groups) + " exceeds 64; use fewer groups");
    if (topk_groups < 1 || topk_groups > n_expert_groups)
      throw ConfigError("model.topk_groups=" + num(topk_groups) + " must be between 1 and model.n_expert_groups=" +
                        num(n_expert_groups));
    if (topk_groups * (n_experts / n_expert_groups) < top_k)
      throw ConfigError("model.topk_groups=" + num(topk_groups) + " groups of " + num(n_experts / n_expert_groups) +
                        " experts cannot hold model.top_k=" + num(top_k) + "; raise topk_groups");
    finite_positive("routed_scaling_factor", routed_scaling_factor);
    positive("expert_ffn_dim", expert_ffn_dim);
    non_negative("n_shared_experts", n_shared_experts);
    if (!(std::isfinite(capacity_factor) && capacity_factor >= 0))
      throw ConfigError("model.capacity_factor=" + num(capacity_factor) + " must be >= 0 (0 = dropless)");
    finite_non_negative("aux_loss_coef", aux_loss_coef);
    finite_non_negative("z_loss_coef", z_loss_coef);
    finite_non_negative("router_bias_update_rate", router_bias_update_rate);
  }
}

}  // namespace sy
