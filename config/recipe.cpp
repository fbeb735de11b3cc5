#include "config/recipe.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <variant>

#include <toml++/toml.h>

#include "config/validate.h"
#include "engine/config_error.h"

namespace sy {

namespace {

// One list of (key, member) per section drives reading, the unknown-key check and writing the
// resolved recipe, so a field added to a config struct needs exactly one new line here.
using FieldRef = std::variant<int64_t*, uint64_t*, double*, bool*, std::string*, ScoreFn*, std::vector<int64_t>*>;
struct Field {
  const char* key;
  FieldRef ref;
};
struct Section {
  const char* name;
  std::vector<Field> fields;
};

std::vector<Section> sections_of(Recipe& r) {
  ModelConfig& m = r.model;
  OptimConfig& o = r.optim;
  TrainConfig& t = r.train;
  ParallelConfig& p = r.parallel;
  return {
      {"model",
       {{"vocab_size", &m.vocab_size}, {"d_model", &m.d_model}, {"n_layers", &m.n_layers}, {"n_heads", &m.n_heads},
        {"n_kv_heads", &m.n_kv_heads}, {"head_dim", &m.head_dim}, {"rope_theta", &m.rope_theta},
        {"seq_len", &m.seq_len}, {"norm_eps", &m.norm_eps}, {"tie_embeddings", &m.tie_embeddings}, {"qk_norm", &m.qk_norm},
        {"q_lora_rank", &m.q_lora_rank}, {"kv_lora_rank", &m.kv_lora_rank}, {"qk_nope_head_dim", &m.qk_nope_head_dim},
        {"qk_rope_head_dim", &m.qk_rope_head_dim}, {"v_head_dim", &m.v_head_dim},
        {"sliding_window", &m.sliding_window}, {"full_attention_every", &m.full_attention_every},
        {"attention_sinks", &m.attention_sinks}, {"attention_bias", &m.attention_bias}, {"rope_scaling", &m.rope_scaling},
        {"rope_factor", &m.rope_factor}, {"rope_original_max_position", &m.rope_original_max_position},
        {"yarn_beta_fast", &m.yarn_beta_fast}, {"yarn_beta_slow", &m.yarn_beta_slow}, {"yarn_truncate", &m.yarn_truncate},
        {"yarn_mscale", &m.yarn_mscale}, {"yarn_mscale_all_dim", &m.yarn_mscale_all_dim},
        {"router_logit_bias", &m.router_logit_bias}, {"expert_bias", &m.expert_bias}, {"swiglu_limit", &m.swiglu_limit},
        {"swiglu_alpha", &m.swiglu_alpha}, {"n_expert_groups", &m.n_expert_groups},
        {"topk_groups", &m.topk_groups}, {"routed_scaling_factor", &m.routed_scaling_factor},
        {"init_std", &m.init_std}, {"d_ff", &m.d_ff}, {"first_dense_layers", &m.first_dense_layers},
        {"n_experts", &m.n_experts}, {"top_k", &m.top_k}, {"expert_ffn_dim", &m.expert_ffn_dim},
        {"n_shared_experts", &m.n_shared_experts}, {"score_fn", &m.score_fn}, {"norm_topk_prob", &m.norm_topk_prob},
        {"capacity_factor", &m.capacity_factor}, {"aux_loss_coef", &m.aux_loss_coef},
        {"z_loss_coef", &m.z_loss_coef}, {"router_bias_update_rate", &m.router_bias_update_rate}}},
      {"optim",
       {{"name", &o.name}, {"lr", &o.lr}, {"min_lr", &o.min_lr}, {"warmup_steps", &o.warmup_steps},
        {"schedule", &o.schedule}, {"beta1", &o.beta1}, {"beta2", &o.beta2}, {"eps", &o.eps},
        {"weight_decay", &o.weight_decay}, {"grad_clip", &o.grad_clip}, {"decay_norms", &o.decay_norms},
        {"decay_embeddings", &o.decay_embeddings}}},
      {"data", {{"train", &r.data.train}, {"val", &r.data.val}}},
      {"train",
       {{"steps", &t.steps}, {"seed", &t.seed}, {"micro_batch", &t.micro_batch}, {"grad_accum", &t.grad_accum},
        {"log_every", &t.log_every}, {"eval_every", &t.eval_every}, {"eval_batches", &t.eval_batches},
        {"max_minutes", &t.max_minutes}, {"stop_at_step", &t.stop_at_step},
        {"max_bad_steps", &t.max_bad_steps}, {"out_dir", &t.out_dir}, {"save_weights", &t.save_weights},
        {"init_weights", &t.init_weights},
        {"peak_gflops", &t.peak_gflops}, {"dtype", &t.dtype}}},
      {"engine", {{"device", &r.engine.device}}},
      {"parallel",
       {{"tp", &p.tp}, {"cp", &p.cp}, {"pp", &p.pp}, {"vpp", &p.vpp}, {"pp_layers", &p.pp_layers}, {"ep", &p.ep}, {"etp", &p.etp}, {"dp", &p.dp},
        {"zero", &p.zero}, {"sp", &p.sp}, {"order", &p.order}, {"timeout_s", &p.timeout_s}, {"bucket_mb", &p.bucket_mb},
        {"comm", &p.comm}, {"overlap_grad_reduce", &p.overlap_grad_reduce}}},
      {"checkpoint",
       {{"every_steps", &r.checkpoint.every_steps}, {"keep", &r.checkpoint.keep}, {"resume", &r.checkpoint.resume},
        {"on_failure", &r.checkpoint.on_failure}, {"async", &r.checkpoint.async}}},
      {"launch",
       {{"hang_timeout_s", &r.launch.hang_timeout_s}, {"max_restarts", &r.launch.max_restarts},
        {"backoff_s", &r.launch.backoff_s}, {"backoff_max_s", &r.launch.backoff_max_s},
        {"preempt_grace_s", &r.launch.preempt_grace_s}}},
  };
}

// TOML basic-string escaping; also keeps user text inside a one-line error message.
std::string toml_quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

std::string describe(const toml::node& n) {
  if (auto v = n.value_exact<std::string>()) return "string " + toml_quote(*v);
  if (auto v = n.value_exact<int64_t>()) return "integer " + std::to_string(*v);
  if (auto v = n.value_exact<double>()) return "float " + format_number(*v);
  if (auto v = n.value_exact<bool>()) return std::string("boolean ") + (*v ? "true" : "false");
  if (n.is_array()) return "an array";
  if (n.is_table()) return "a table";
  return "a date/time";
}

std::string score_fn_name(ScoreFn f) { return f == ScoreFn::Sigmoid ? "sigmoid" : "softmax"; }

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The valid name within two edits of a misspelling, or "".
std::string nearest(std::string_view got, const std::vector<std::string>& valid) {
  size_t best = 3;
  std::string hit;
  for (const std::string& v : valid) {
    const size_t d = edit_distance(got, v);
    if (d < best) best = d, hit = v;
  }
  return hit;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Where a section.key came from, for error messages: the --set that wrote it, or the recipe.
struct Origins {
  std::string source;                              // the recipe file, or "recipe <name>"
  std::vector<std::pair<std::string, std::string>> sets;  // (section.key, the --set text)
  std::string of(const std::string& dotted) const {
    for (auto it = sets.rbegin(); it != sets.rend(); ++it)
      if (it->first == dotted) return "--set " + it->second;
    return source;
  }
  std::string of_section(const std::string& section) const {
    for (auto it = sets.rbegin(); it != sets.rend(); ++it)
      if (it->first.rfind(section + ".", 0) == 0) return "--set " + it->second;
    return source;
  }
};

bool is_bare_key(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-';
  });
}

void apply_override(toml::table& root, const std::string& spec, Origins& origins) {
  const size_t eq = spec.find('=');
  std::string lhs = eq == std::string::npos ? spec : spec.substr(0, eq);
  lhs.erase(0, lhs.find_first_not_of(" \t"));
  lhs.erase(lhs.find_last_not_of(" \t") + 1);
  const size_t dot = lhs.find('.');
  if (eq == std::string::npos || dot == std::string::npos || !is_bare_key(lhs.substr(0, dot)) ||
      !is_bare_key(lhs.substr(dot + 1)))
    throw ConfigError("bad --set " + toml_quote(spec) + ": expected section.key=value, e.g. --set train.steps=100");
  const std::string section = lhs.substr(0, dot), key = lhs.substr(dot + 1);
  std::string raw = spec.substr(eq + 1);
  raw.erase(0, raw.find_first_not_of(" \t"));
  raw.erase(raw.find_last_not_of(" \t") + 1);

  // A value is read as TOML so numbers and booleans keep their types; text that is not a TOML
  // value (a path, a bare word) is taken as a string so that --set data.train=x.tok just works.
  toml::table parsed;
  bool is_toml = false;
  try {
    parsed = toml::parse("v = " + raw);
    is_toml = parsed.size() == 1 && parsed.contains("v");
  } catch (const toml::parse_error&) {
  }

  toml::node* sec = root.get(section);
  if (!sec) {
    root.insert_or_assign(section, toml::table{});
    sec = root.get(section);
  }
  if (!sec->is_table())
    throw ConfigError(section + " in " + origins.source + " is " + describe(*sec) + ", not a section; write it as [" +
                      section + "]");
  if (is_toml)
    sec->as_table()->insert_or_assign(key, *parsed.get("v"));
  else
    sec->as_table()->insert_or_assign(key, raw);
  origins.sets.emplace_back(lhs, spec);
}

const char* type_phrase(const FieldRef& ref) {
  switch (ref.index()) {
    case 0: return "an integer";
    case 1: return "a non-negative integer";
    case 2: return "a number";
    case 3: return "true or false";
    case 4: return "a string";
    case 6: return "an array of integers";
    default: return "\"softmax\" or \"sigmoid\"";
  }
}

void read_field(const Field& f, const toml::node& n, const std::string& dotted, const Origins& origins) {
  auto wrong = [&] {
    std::string msg = dotted + " must be " + type_phrase(f.ref) + ", got " + describe(n);
    const std::string from = origins.of(dotted);
    if (from != origins.source) msg += " (from " + from + ")";
    if (f.ref.index() == 4 && !n.is_string())
      msg += "; quote it, e.g. " + dotted + " = \"...\"";
    throw ConfigError(msg);
  };
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          auto v = n.value_exact<int64_t>();
          if (!v) wrong();
          *p = *v;
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          auto v = n.value_exact<int64_t>();
          if (!v || *v < 0) wrong();
          *p = uint64_t(*v);
        } else if constexpr (std::is_same_v<T, double>) {
          if (auto i = n.value_exact<int64_t>()) *p = double(*i);
          else if (auto d = n.value_exact<double>()) *p = *d;
          else wrong();
        } else if constexpr (std::is_same_v<T, bool>) {
          auto v = n.value_exact<bool>();
          if (!v) wrong();
          *p = *v;
        } else if constexpr (std::is_same_v<T, std::string>) {
          auto v = n.value_exact<std::string>();
          if (!v) wrong();
          *p = *v;
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          const toml::array* a = n.as_array();
          if (!a) wrong();
          p->clear();
          for (const toml::node& e : *a) {
            auto v = e.value_exact<int64_t>();
            if (!v) wrong();
            p->push_back(*v);
          }
        } else {
          auto v = n.value_exact<std::string>();
          if (!v || (*v != "softmax" && *v != "sigmoid")) wrong();
          *p = *v == "sigmoid" ? ScoreFn::Sigmoid : ScoreFn::Softmax;
        }
      },
      f.ref);
}

void read_sections(const toml::table& root, std::vector<Section>& sections, const Origins& origins) {
  std::vector<std::string> section_names;
  for (const Section& s : sections) section_names.push_back(s.name);
  for (const auto& [k, node] : root) {
    const std::string name(k.str());
    auto sec = std::find_if(sections.begin(), sections.end(), [&](const Section& s) { return name == s.name; });
    if (sec == sections.end()) {
      std::vector<std::string> bracketed;
      for (const std::string& s : section_names) bracketed.push_back("[" + s + "]");
      const std::string hit = nearest(name, section_names);
      throw ConfigError("unknown section [" + name + "] in " + origins.of_section(name) +
                        (hit.empty() ? "" : " (did you mean [" + hit + "]?)") + "; valid sections: " + join(bracketed, ", "));
    }
    if (!node.is_table())
      throw ConfigError(name + " in " + origins.source + " is " + describe(node) + ", not a section; write it as [" +
                        name + "] with keys below it");
    std::vector<std::string> keys;
    for (const Field& f : sec->fields) keys.push_back(f.key);
    for (const auto& [kk, value] : *node.as_table()) {
      const std::string key(kk.str()), dotted = name + "." + key;
      auto field = std::find_if(sec->fields.begin(), sec->fields.end(), [&](const Field& f) { return key == f.key; });
      if (field == sec->fields.end()) {
        const std::string hit = nearest(key, keys);
        throw ConfigError("unknown key " + dotted + " in " + origins.of(dotted) +
                          (hit.empty() ? "" : " (did you mean " + name + "." + hit + "?)") + "; valid keys of [" + name +
                          "]: " + join(keys, ", "));
      }
      read_field(*field, value, dotted, origins);
    }
  }
}

std::string toml_value(const FieldRef& ref) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, bool>) return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>) return std::to_string(*p);
        else if constexpr (std::is_same_v<T, double>) {
          std::string s = format_number(*p);
          // TOML floats need a fraction or exponent, else they read back as integers.
          if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
          return s;
        } else if constexpr (std::is_same_v<T, std::string>) return toml_quote(*p);
        else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          std::string s = "[";
          for (size_t i = 0; i < p->size(); ++i) s += (i ? ", " : "") + std::to_string((*p)[i]);
          return s + "]";
        } else return toml_quote(score_fn_name(*p));
      },
      ref);
}

Recipe parse_impl(const std::string& text, const std::string& name, const std::string& path,
                  const std::vector<std::string>& overrides) {
  Origins origins;
  origins.source = path.empty() ? "recipe " + toml_quote(name) : path;
  toml::table root;
  try {
    root = toml::parse(text, path.empty() ? std::string_view(name) : std::string_view(path));
  } catch (const toml::parse_error& e) {
    std::string desc(e.description());
    std::replace(desc.begin(), desc.end(), '\n', ' ');
    const auto& b = e.source().begin;
    throw ConfigError(origins.source + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) +
                      ": invalid TOML: " + desc + "; fix the syntax there");
  }
  for (const std::string& o : overrides) apply_override(root, o, origins);

  Recipe r;
  r.name = name;
  r.path = path;
  std::vector<Section> sections = sections_of(r);
  read_sections(root, sections, origins);
  if (r.train.out_dir.empty()) r.train.out_dir = "runs/" + name;
  validate_recipe(r);

  // Every key with its effective value, defaults included, so the provenance copy reproduces the
  // run even if a default changes later.
  std::ostringstream out;
  out << "# Resolved recipe " << toml_quote(name);
  if (!path.empty()) out << " from " << path;
  out << "\n";
  for (std::string o : overrides) {
    std::replace(o.begin(), o.end(), '\n', ' ');  // a comment must stay on one line
    out << "# --set " << o << "\n";
  }
  for (const Section& s : sections) {
    out << "\n[" << s.name << "]\n";
    for (const Field& f : s.fields) out << f.key << " = " << toml_value(f.ref) << "\n";
  }
  r.resolved_toml = out.str();
  return r;
}

}  // namespace

Recipe parse_recipe(const std::string& toml_text, const std::string& name, const std::vector<std::string>& overrides) {
  return parse_impl(toml_text, name, "", overrides);
}

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw ConfigError(path + ": no such recipe file; check the path (the shipped recipes are in recipes/*.toml)");
  if (fs::is_directory(path, ec))
    throw ConfigError(path + ": is a directory, not a recipe file; give the path of a .toml recipe");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read the recipe file; check its permissions");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_impl(text.str(), fs::path(path).stem().string(), path, overrides);
}

}  // namespace sy
