#include "trainer/hf_names.h"

#include <regex>

#include "engine/config_error.h"

namespace sy {

namespace {

// The same layout on both sides, or transposed ([r, c] here is [c, r] there).
HfPlacement same(const std::string& name, const Shape& shape) {
  const int64_t cols = shape.empty() ? 1 : shape.back();
  return {name, shape, [cols](int64_t r, int64_t c) { return r * cols + c; }};
}
HfPlacement transposed(const std::string& name, const Shape& shape) {
  const int64_t rows = shape[0];
  return {name, {shape[1], shape[0]}, [rows](int64_t r, int64_t c) { return c * rows + r; }};
}

// DeepSeek's rotary rows come interleaved (pairs 2i, 2i+1); ours pair i with i + dr/2. Row j of
// our rotary part is row perm(j) of theirs: the evens, then the odds.
int64_t from_interleaved(int64_t j, int64_t dr) { return j < dr / 2 ? 2 * j : 2 * (j - dr / 2) + 1; }

// Rows of a [heads * width, cols] matrix whose last dr rows per head are rotary (q), or of one
// [lead + dr, cols] matrix whose rows after `lead` are (the kv latent's shared rotary key).
HfPlacement rope_rows(const std::string& name, const Shape& shape, int64_t width, int64_t dr, bool per_head) {
  const int64_t cols = shape[1];
  return {name, shape, [=](int64_t r, int64_t c) {
            const int64_t base = per_head ? r / width * width : 0, j = per_head ? r % width : r;
            const int64_t lead = width - dr;
            const int64_t src = j < lead ? j : lead + from_interleaved(j - lead, dr);
            return (base + src) * cols + c;
          }};
}

std::pair<std::string, bool> mixtral_like(const std::string& rest, const std::string& p, const std::string& family) {
  static const std::regex expert(R"(moe\.experts\.(\d+)\.(w[123]))");
  std::smatch e;
  const bool mixtral = family == "mixtral";
  if (rest == "attn.q_norm.weight" && !mixtral) return {p + "self_attn.q_norm.weight", false};
  if (rest == "attn.k_norm.weight" && !mixtral) return {p + "self_attn.k_norm.weight", false};
  if (rest == "moe.router.weight") return {p + (mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"), false};
  if (std::regex_match(rest, e, expert)) {
    const std::string w = e[2];
    if (mixtral) return {p + "block_sparse_moe.experts." + std::string(e[1]) + "." + w + ".weight", w == "w2"};
    const char* proj = w == "w1" ? "gate_proj" : w == "w3" ? "up_proj" : "down_proj";
    return {p + "mlp.experts." + std::string(e[1]) + "." + proj + ".weight", w == "w2"};
  }
  if (!mixtral && (rest == "mlp.w1" || rest == "mlp.w2" || rest == "mlp.w3"))
    return {p + "mlp." + (rest == "mlp.w1" ? "gate_proj" : rest == "mlp.w3" ? "up_proj" : "down_proj") + ".weight",
            rest == "mlp.w2"};
  return {"", false};
}

const char* proj_of(const std::string& w) { return w == "w1" ? "gate_proj" : w == "w3" ? "up_proj" : "down_proj"; }

// DeepSeek-V3 (transformers' DeepseekV3ForCausalLM names).
HfPlacement deepseek(const std::string& rest, const std::string& p, const Shape& shape, const ModelConfig& cfg) {
  const int64_t dr = cfg.qk_rope_head_dim;
  const std::string a = p + "self_attn.";
  if (rest == "attn.wq_a") return same(a + "q_a_proj.weight", shape);
  if (rest == "attn.q_a_norm.weight") return same(a + "q_a_layernorm.weight", shape);
  if (rest == "attn.wq_b") return rope_rows(a + "q_b_proj.weight", shape, cfg.qk_head_dim(), dr, true);
  if (rest == "attn.wq") return rope_rows(a + "q_proj.weight", shape, cfg.qk_head_dim(), dr, true);
  if (rest == "attn.wkv_a") return rope_rows(a + "kv_a_proj_with_mqa.weight", shape, shape[0], dr, false);
  if (rest == "attn.kv_a_norm.weight") return same(a + "kv_a_layernorm.weight", shape);
  if (rest == "attn.wkv_b") return same(a + "kv_b_proj.weight", shape);
  if (rest == "moe.router.weight") return same(p + "mlp.gate.weight", shape);
  if (rest == "moe.router.bias") return same(p + "mlp.gate.e_score_correction_bias", shape);
  static const std::regex routed(R"(moe\.experts\.(\d+)\.(w[123]))"), shared(R"(moe\.shared\.(\d+)\.(w[123]))");
  std::smatch m;
  if (std::regex_match(rest, m, routed)) {
    const std::string n = p + "mlp.experts." + std::string(m[1]) + "." + proj_of(m[2]) + ".weight";
    return m[2] == "w2" ? transposed(n, shape) : same(n, shape);
  }
  if (std::regex_match(rest, m, shared)) {  // one MLP of width S * Fe there: expert s is its block s
    const int64_t s = std::stoll(m[1]), fe = shape[0], d = shape[1], width = cfg.n_shared_experts * fe;
    const std::string n = p + "mlp.shared_experts." + std::string(proj_of(m[2])) + ".weight";
    if (m[2] == "w2")  // ours [Fe, D] (in, out) is columns [s Fe, (s+1) Fe) of their [D, S Fe]
      return {n, {d, width}, [=](int64_t r, int64_t c) { return c * width + s * fe + r; }};
    return {n, {width, d}, [=](int64_t r, int64_t c) { return (s * fe + r) * d + c; }};
  }
  if (rest == "mlp.w1" || rest == "mlp.w2" || rest == "mlp.w3") {
    const std::string n = p + "mlp." + proj_of(rest.substr(4)) + ".weight";
    return rest == "mlp.w2" ? transposed(n, shape) : same(n, shape);
  }
  return {};
}

// gpt-oss (transformers' GptOssForCausalLM names): fused experts [E, D, 2F] with gate on the even
// and up on the odd columns, down [E, F, D] stored [in, out] as ours.
HfPlacement gpt_oss(const std::string& rest, const std::string& p, const Shape& shape, const ModelConfig& cfg) {
  const std::string a = p + "self_attn.";
  if (rest == "attn.bq") return same(a + "q_proj.bias", shape);
  if (rest == "attn.bk") return same(a + "k_proj.bias", shape);
  if (rest == "attn.bv") return same(a + "v_proj.bias", shape);
  if (rest == "attn.bo") return same(a + "o_proj.bias", shape);
  if (rest == "attn.sinks") return same(a + "sinks", shape);
  if (rest == "moe.router.weight") return same(p + "mlp.router.weight", shape);
  if (rest == "moe.router.logit_bias") return same(p + "mlp.router.bias", shape);
  static const std::regex expert(R"(moe\.experts\.(\d+)\.(w[123]|b13|b2))");
  std::smatch m;
  if (!std::regex_match(rest, m, expert)) return {};
  const int64_t e = std::stoll(m[1]), E = cfg.n_experts, f = cfg.expert_ffn_dim, d = cfg.d_model;
  const std::string w = m[2], x = p + "mlp.experts.";
  if (w == "w1" || w == "w3") {  // ours [F, D]: column 2f (+1 for up) of their [D, 2F] block e
    const int64_t odd = w == "w3";
    return {x + "gate_up_proj", {E, d, 2 * f}, [=](int64_t r, int64_t c) { return (e * d + c) * 2 * f + 2 * r + odd; }};
  }
  if (w == "w2") return {x + "down_proj", {E, f, d}, [=](int64_t r, int64_t c) { return (e * f + r) * d + c; }};
  if (w == "b13")  // ours [gate biases | up biases], theirs interleaved
    return {x + "gate_up_proj_bias", {E, 2 * f}, [=](int64_t, int64_t c) { return e * 2 * f + (c < f ? 2 * c : 2 * (c - f) + 1); }};
  return {x + "down_proj_bias", {E, d}, [=](int64_t, int64_t c) { return e * d + c; }};
}

}  // namespace

std::string hf_family(const ModelConfig& cfg, const std::string& requested) {
  if (!requested.empty()) {
    for (const char* f : {"mixtral", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss"})
      if (requested == f) return requested;
    throw ConfigError("--family " + requested + " is not one of mixtral, qwen3_moe, olmoe, deepseek_v3, gpt_oss");
  }
  if (cfg.mla()) return "deepseek_v3";
  if (cfg.attention_sinks || cfg.expert_bias) return "gpt_oss";
  return cfg.qk_norm == "head" ? "qwen3_moe" : cfg.qk_norm == "full" ? "olmoe" : "mixtral";
}

HfPlacement hf_placement(const std::string& ours, const Shape& shape, const ModelConfig& cfg,
                         const std::string& family) {
  auto none = [&] {
    return ConfigError(ours + " has no Hugging Face " + family + " tensor (this family lacks the feature); use a "
                       "recipe of the family's architecture");
  };
  if (ours == "embed.weight") return same("model.embed_tokens.weight", shape);
  if (ours == "final_norm.weight") return same("model.norm.weight", shape);
  if (ours == "lm_head.weight") return same("lm_head.weight", shape);
  static const std::regex layer(R"(layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(ours, m, layer)) throw none();
  const std::string p = "model.layers." + std::string(m[1]) + ".", rest = m[2];
  if (rest == "attn_norm.weight") return same(p + "input_layernorm.weight", shape);
  if (rest == "ffn_norm.weight") return same(p + "post_attention_layernorm.weight", shape);
  if (rest == "attn.wo") return transposed(p + "self_attn.o_proj.weight", shape);
  if (!cfg.mla()) {
    if (rest == "attn.wq") return same(p + "self_attn.q_proj.weight", shape);
    if (rest == "attn.wk") return same(p + "self_attn.k_proj.weight", shape);
    if (rest == "attn.wv") return same(p + "self_attn.v_proj.weight", shape);
  }
  HfPlacement out;
  if (family == "deepseek_v3") {
    out = deepseek(rest, p, shape, cfg);
  } else if (family == "gpt_oss") {
    out = gpt_oss(rest, p, shape, cfg);
  } else {
    const auto [name, t] = mixtral_like(rest, p, family);
    if (!name.empty()) out = t ? transposed(name, shape) : same(name, shape);
  }
  if (out.name.empty()) throw none();
  return out;
}

}  // namespace sy
