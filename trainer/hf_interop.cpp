#include "trainer/hf_interop.h"

#include <regex>
#include <sstream>

#include "engine/config_error.h"
#include "engine/model.h"

namespace sy {

namespace {

// A [r, c] float32 array as [c, r].
HostArray transposed(const HostArray& a) {
  HostArray t;
  t.shape = {a.shape[1], a.shape[0]};
  t.dtype = DType::F32;
  t.bytes.resize(a.bytes.size());
  const auto* s = reinterpret_cast<const float*>(a.bytes.data());
  auto* d = reinterpret_cast<float*>(t.bytes.data());
  const int64_t r = a.shape[0], c = a.shape[1];
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) d[j * r + i] = s[i * c + j];
  return t;
}

// Any float array as float32 (bf16 widens exactly, float64 rounds).
HostArray as_f32(const HostArray& a) {
  if (a.dtype == DType::F32) return a;
  if (a.dtype == DType::I32) throw ConfigError("an integer tensor where a weight belongs; the checkpoint is not a model's");
  const std::vector<double> v = a.to_f64();
  return host_array(a.shape, std::vector<float>(v.begin(), v.end()));
}

}  // namespace

std::string hf_family(const ModelConfig& cfg, const std::string& requested) {
  if (!requested.empty()) {
    if (requested != "mixtral" && requested != "qwen3_moe" && requested != "olmoe")
      throw ConfigError("--family " + requested + " is not one of mixtral, qwen3_moe, olmoe");
    return requested;
  }
  return cfg.qk_norm == "head" ? "qwen3_moe" : cfg.qk_norm == "full" ? "olmoe" : "mixtral";
}

std::pair<std::string, bool> hf_name_of(const std::string& ours, const std::string& family) {
  static const std::regex layer(R"(layers\.(\d+)\.(.+))");
  std::smatch m;
  if (ours == "embed.weight") return {"model.embed_tokens.weight", false};
  if (ours == "final_norm.weight") return {"model.norm.weight", false};
  if (ours == "lm_head.weight") return {"lm_head.weight", false};
  if (!std::regex_match(ours, m, layer)) throw ConfigError(ours + " has no Hugging Face " + family + " tensor");
  const std::string p = "model.layers." + std::string(m[1]) + ".", rest = m[2];
  const bool mixtral = family == "mixtral";
  static const std::regex expert(R"(moe\.experts\.(\d+)\.(w[123]))");
  std::smatch e;
  if (rest == "attn_norm.weight") return {p + "input_layernorm.weight", false};
  if (rest == "ffn_norm.weight") return {p + "post_attention_layernorm.weight", false};
  if (rest == "attn.wq") return {p + "self_attn.q_proj.weight", false};
  if (rest == "attn.wk") return {p + "self_attn.k_proj.weight", false};
  if (rest == "attn.wv") return {p + "self_attn.v_proj.weight", false};
  if (rest == "attn.wo") return {p + "self_attn.o_proj.weight", true};
  if (rest == "attn.q_norm.weight" && !mixtral) return {p + "self_attn.q_norm.weight", false};
  if (rest == "attn.k_norm.weight" && !mixtral) return {p + "self_attn.k_norm.weight", false};
  if (rest == "moe.router.weight") return {p + (mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"), false};
  // Every w2 (the down projection) is stored [in, out] here, [out, in] there: transposed.
  if (std::regex_match(rest, e, expert)) {
    const std::string w = e[2];
    if (mixtral) return {p + "block_sparse_moe.experts." + std::string(e[1]) + "." + w + ".weight", w == "w2"};
    const char* proj = w == "w1" ? "gate_proj" : w == "w3" ? "up_proj" : "down_proj";
    return {p + "mlp.experts." + std::string(e[1]) + "." + proj + ".weight", w == "w2"};
  }
  if (!mixtral && (rest == "mlp.w1" || rest == "mlp.w2" || rest == "mlp.w3"))
    return {p + "mlp." + (rest == "mlp.w1" ? "gate_proj" : rest == "mlp.w3" ? "up_proj" : "down_proj") + ".weight",
            rest == "mlp.w2"};
  throw ConfigError(ours + " has no Hugging Face " + family + " tensor (shared experts, dense layers and this family's "
                    "missing features do not map); use a recipe of the family's architecture");
}

std::vector<std::pair<std::string, HostArray>> import_hf(const ModelConfig& cfg, const std::string& family,
                                                         const std::map<std::string, HostArray>& hf) {
  auto be = make_cpu_backend();
  Model model(cfg, *be, DType::F32, 1);  // the names and shapes to fill
  std::vector<std::pair<std::string, HostArray>> out;
  for (const ParamInfo& p : model.params().infos()) {
    const auto [name, transpose] = hf_name_of(p.name, family);
    auto it = hf.find(name);
    if (it == hf.end())
      throw ConfigError("the Hugging Face checkpoint has no " + name + " (for " + p.name +
                        "); is it a " + family + " model of the recipe's sizes?");
    HostArray a = as_f32(it->second);
    if (transpose) {
      if (a.shape.size() != 2) throw ConfigError(name + " is not a matrix");
      a = transposed(a);
    }
    if (a.shape != p.global_shape)
      throw ConfigError(name + " has shape " + shape_str(it->second.shape) + ", the recipe's " + p.name + " needs " +
                        shape_str(p.global_shape) + (transpose ? " (after transposing)" : "") +
                        "; use the recipe of the checkpoint's model");
    out.emplace_back(p.name, std::move(a));
  }
  for (auto& [name, t] : model.buffers())  // the aux-free router biases start at zero
    out.emplace_back(name, host_array(t.shape(), std::vector<float>(size_t(t.numel()), 0.0f)));
  return out;
}

std::vector<std::pair<std::string, HostArray>> export_hf(const ModelConfig& cfg, const std::string& family,
                                                         const std::map<std::string, HostArray>& ours) {
  auto be = make_cpu_backend();
  Model model(cfg, *be, DType::F32, 1);
  std::vector<std::pair<std::string, HostArray>> out;
  for (const ParamInfo& p : model.params().infos()) {
    auto it = ours.find(p.name);
    if (it == ours.end()) throw ConfigError("the weights file has no " + p.name + "; it was written for another model");
    if (it->second.shape != p.global_shape)
      throw ConfigError(p.name + " has shape " + shape_str(it->second.shape) + ", the recipe needs " + shape_str(p.global_shape));
    const auto [name, transpose] = hf_name_of(p.name, family);
    HostArray a = as_f32(it->second);
    out.emplace_back(name, transpose ? transposed(a) : a);
  }
  return out;
}

std::string hf_config_json(const ModelConfig& c, const std::string& family) {
  std::ostringstream o;
  o.precision(17);
  const bool mixtral = family == "mixtral";
  const char* arch = mixtral ? "MixtralForCausalLM" : family == "qwen3_moe" ? "Qwen3MoeForCausalLM" : "OlmoeForCausalLM";
  o << "{\n  \"architectures\": [\"" << arch << "\"],\n  \"model_type\": \"" << family << "\",\n"
    << "  \"hidden_size\": " << c.d_model << ",\n  \"num_hidden_layers\": " << c.n_layers << ",\n"
    << "  \"num_attention_heads\": " << c.n_heads << ",\n  \"num_key_value_heads\": " << c.n_kv_heads << ",\n"
    << "  \"head_dim\": " << c.resolved_head_dim() << ",\n  \"vocab_size\": " << c.vocab_size << ",\n"
    << "  \"rope_theta\": " << c.rope_theta << ",\n  \"rms_norm_eps\": " << c.norm_eps << ",\n"
    << "  \"max_position_embeddings\": " << c.seq_len << ",\n"
    << "  \"tie_word_embeddings\": " << (c.tie_embeddings ? "true" : "false") << ",\n"
    << "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n"
    << "  \"num_experts_per_tok\": " << c.top_k << ",\n"
    << "  \"router_aux_loss_coef\": " << c.aux_loss_coef << ",\n";
  if (mixtral)
    o << "  \"num_local_experts\": " << c.n_experts << ",\n  \"intermediate_size\": " << c.expert_ffn_dim << ",\n";
  else
    o << "  \"num_experts\": " << c.n_experts << ",\n  \"moe_intermediate_size\": " << c.expert_ffn_dim << ",\n"
      << "  \"intermediate_size\": " << (family == "olmoe" ? c.expert_ffn_dim : c.d_ff) << ",\n"
      << "  \"norm_topk_prob\": " << (c.norm_topk_prob ? "true" : "false") << ",\n";
  o << "  \"torch_dtype\": \"float32\"\n}\n";
  return o.str();
}

}  // namespace sy
