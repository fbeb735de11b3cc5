#include "trainer/hf_interop.h"

#include <sstream>

#include "engine/config_error.h"
#include "engine/model.h"

namespace sy {

namespace {

// Any float array as float32 (bf16 widens exactly, float64 rounds).
HostArray as_f32(const HostArray& a) {
  if (a.dtype == DType::F32) return a;
  if (a.dtype == DType::I32) throw ConfigError("an integer tensor where a weight belongs; the checkpoint is not a model's");
  const std::vector<double> v = a.to_f64();
  return host_array(a.shape, std::vector<float>(v.begin(), v.end()));
}

// Our array of `shape` gathered from their tensor through the placement.
HostArray gather(const HfPlacement& pl, const HostArray& theirs, const Shape& shape) {
  std::vector<float> v(size_t(shape_numel(shape)));
  const float* src = reinterpret_cast<const float*>(theirs.bytes.data());
  for_each_placed(pl, shape, [&](int64_t i, int64_t j) { v[size_t(i)] = src[j]; });
  return host_array(shape, v);
}

}  // namespace

std::vector<std::pair<std::string, HostArray>> import_hf(const ModelConfig& cfg, const std::string& family,
                                                         const std::map<std::string, HostArray>& hf) {
  auto be = make_cpu_backend();
  Model model(cfg, *be, DType::F32, 1);  // the names and shapes to fill
  std::vector<std::pair<std::string, HostArray>> out;
  auto take = [&](const std::string& ours, const Shape& shape, const HfPlacement& pl) {
    auto it = hf.find(pl.name);
    if (it == hf.end())
      throw ConfigError("the Hugging Face checkpoint has no " + pl.name + " (for " + ours + "); is it a " + family +
                        " model of the recipe's sizes?");
    if (it->second.shape != pl.shape)
      throw ConfigError(pl.name + " has shape " + shape_str(it->second.shape) + ", the recipe's " + ours + " needs " +
                        shape_str(pl.shape) + "; use the recipe of the checkpoint's model");
    out.emplace_back(ours, gather(pl, as_f32(it->second), shape));
  };
  for (const ParamInfo& p : model.params().infos()) take(p.name, p.global_shape, hf_placement(p.name, p.global_shape, cfg, family));
  // Buffers: DeepSeek's e_score_correction_bias is the aux-loss-free balancing bias; families
  // without one start it at zero.
  for (auto& [name, t] : model.buffers()) {
    HfPlacement pl;
    try {
      pl = hf_placement(name, t.shape(), cfg, family);
    } catch (const ConfigError&) {
      out.emplace_back(name, host_array(t.shape(), std::vector<float>(size_t(t.numel()), 0.0f)));
      continue;
    }
    take(name, t.shape(), pl);
  }
  return out;
}

std::vector<std::pair<std::string, HostArray>> export_hf(const ModelConfig& cfg, const std::string& family,
                                                         const std::map<std::string, HostArray>& ours) {
  auto be = make_cpu_backend();
  Model model(cfg, *be, DType::F32, 1);
  std::vector<std::pair<std::string, HostArray>> out;
  std::map<std::string, size_t> slot;    // HF name -> index in out
  std::map<std::string, int64_t> filled;  // elements written into each
  auto put = [&](const Shape& shape, const HostArray& a, const HfPlacement& pl) {
    auto [it, fresh] = slot.emplace(pl.name, out.size());
    if (fresh) out.emplace_back(pl.name, host_array(pl.shape, std::vector<float>(size_t(shape_numel(pl.shape)), 0.0f)));
    HostArray& dst = out[it->second].second;
    const HostArray src = as_f32(a);
    const float* s = reinterpret_cast<const float*>(src.bytes.data());
    float* d = reinterpret_cast<float*>(dst.bytes.data());
    for_each_placed(pl, shape, [&](int64_t i, int64_t j) { d[j] = s[i]; });
    filled[pl.name] += shape_numel(shape);
  };
  for (const ParamInfo& p : model.params().infos()) {
    auto it = ours.find(p.name);
    if (it == ours.end()) throw ConfigError("the weights file has no " + p.name + "; it was written for another model");
    if (it->second.shape != p.global_shape)
      throw ConfigError(p.name + " has shape " + shape_str(it->second.shape) + ", the recipe needs " + shape_str(p.global_shape));
    put(p.global_shape, it->second, hf_placement(p.name, p.global_shape, cfg, family));
  }
  for (auto& [name, t] : model.buffers()) {  // the balancing bias where the family keeps it
    auto it = ours.find(name);
    if (it == ours.end()) continue;
    HfPlacement pl;
    try {
      pl = hf_placement(name, t.shape(), cfg, family);
    } catch (const ConfigError&) {
      continue;  // the family has no tensor for it
    }
    put(t.shape(), it->second, pl);
  }
  for (const auto& [name, n] : filled)
    if (n != shape_numel(out[slot.at(name)].second.shape))
      throw std::logic_error("export to " + family + " filled " + std::to_string(n) + " of " + name + "'s " +
                             std::to_string(shape_numel(out[slot.at(name)].second.shape)) + " elements");
  return out;
}

std::string hf_config_json(const ModelConfig& c, const std::string& family) {
  std::ostringstream o;
  o.precision(17);
  auto b = [](bool v) { return v ? "true" : "false"; };
  const bool mixtral = family == "mixtral", dsv3 = family == "deepseek_v3", oss = family == "gpt_oss";
  const char* arch = mixtral ? "MixtralForCausalLM" : family == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                   : dsv3    ? "DeepseekV3ForCausalLM" : oss ? "GptOssForCausalLM" : "OlmoeForCausalLM";
  o << "{\n  \"architectures\": [\"" << arch << "\"],\n  \"model_type\": \"" << family << "\",\n"
    << "  \"hidden_size\": " << c.d_model << ",\n  \"num_hidden_layers\": " << c.n_layers << ",\n"
    << "  \"num_attention_heads\": " << c.n_heads << ",\n  \"num_key_value_heads\": " << c.n_kv_heads << ",\n"
    << "  \"head_dim\": " << (c.mla() ? c.qk_rope_head_dim : c.resolved_head_dim()) << ",\n  \"vocab_size\": "
    << c.vocab_size << ",\n  \"rms_norm_eps\": " << c.norm_eps << ",\n"
    << "  \"max_position_embeddings\": " << c.seq_len << ",\n"
    << "  \"tie_word_embeddings\": " << b(c.tie_embeddings) << ",\n"
    << "  \"hidden_act\": \"silu\",\n  \"attention_bias\": " << b(c.attention_bias) << ",\n"
    << "  \"num_experts_per_tok\": " << c.top_k << ",\n"
    << "  \"router_aux_loss_coef\": " << c.aux_loss_coef << ",\n";
  if (c.rope_scaling == "yarn") {
    o << "  \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": " << c.rope_theta
      << ", \"factor\": " << c.rope_factor << ", \"original_max_position_embeddings\": " << c.rope_original_max_position
      << ", \"beta_fast\": " << c.yarn_beta_fast << ", \"beta_slow\": " << c.yarn_beta_slow
      << ", \"truncate\": " << b(c.yarn_truncate);
    if (c.yarn_mscale > 0) o << ", \"mscale\": " << c.yarn_mscale << ", \"mscale_all_dim\": " << c.yarn_mscale_all_dim;
    o << "},\n";
  } else {
    o << "  \"rope_theta\": " << c.rope_theta << ",\n";
  }
  if (mixtral) {
    o << "  \"num_local_experts\": " << c.n_experts << ",\n  \"intermediate_size\": " << c.expert_ffn_dim << ",\n";
  } else if (dsv3) {
    o << "  \"n_routed_experts\": " << c.n_experts << ",\n  \"moe_intermediate_size\": " << c.expert_ffn_dim
      << ",\n  \"intermediate_size\": " << c.d_ff << ",\n  \"n_shared_experts\": " << c.n_shared_experts
      << ",\n  \"first_k_dense_replace\": " << c.first_dense_layers << ",\n  \"n_group\": " << c.n_expert_groups
      << ",\n  \"topk_group\": " << c.topk_groups << ",\n  \"routed_scaling_factor\": " << c.routed_scaling_factor
      << ",\n  \"norm_topk_prob\": " << b(c.norm_topk_prob) << ",\n  \"q_lora_rank\": ";
    if (c.q_lora_rank > 0) o << c.q_lora_rank;
    else o << "null";
    o << ",\n  \"kv_lora_rank\": " << c.kv_lora_rank << ",\n  \"qk_nope_head_dim\": " << c.qk_nope_head_dim
      << ",\n  \"qk_rope_head_dim\": " << c.qk_rope_head_dim << ",\n  \"v_head_dim\": " << c.v_head_dim
      << ",\n  \"rope_interleave\": true,\n  \"num_nextn_predict_layers\": 0,\n";
  } else if (oss) {
    o << "  \"num_local_experts\": " << c.n_experts << ",\n  \"intermediate_size\": " << c.expert_ffn_dim
      << ",\n  \"sliding_window\": " << c.sliding_window << ",\n  \"layer_types\": [";
    for (int64_t l = 0; l < c.n_layers; ++l)
      o << (l ? ", " : "") << (c.layer_window(l) > 0 ? "\"sliding_attention\"" : "\"full_attention\"");
    o << "],\n  \"swiglu_limit\": " << c.swiglu_limit << ",\n  \"swiglu_alpha\": " << c.swiglu_alpha << ",\n";
  } else {
    o << "  \"num_experts\": " << c.n_experts << ",\n  \"moe_intermediate_size\": " << c.expert_ffn_dim << ",\n"
      << "  \"intermediate_size\": " << (family == "olmoe" ? c.expert_ffn_dim : c.d_ff) << ",\n"
      << "  \"norm_topk_prob\": " << b(c.norm_topk_prob) << ",\n";
  }
  o << "  \"torch_dtype\": \"float32\"\n}\n";
  return o.str();
}

}  // namespace sy
