#include "planner/plan_input.h"

#include <sstream>

#include <toml++/toml.h>

#include "engine/config_error.h"

namespace sy {

Recipe load_plannable_recipe(const std::string& path) {
  Recipe r = load_recipe(path);
  const toml::table t = toml::parse_file(path);  // load_recipe has parsed it once already
  std::vector<std::string> need = {"vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "seq_len", "n_experts"};
  if (r.model.n_experts > 0) need.insert(need.end(), {"top_k", "expert_ffn_dim"});
  if (r.model.n_experts == 0 || r.model.first_dense_layers > 0) need.push_back("d_ff");
  for (const std::string& key : need)
    if (!t["model"][key])
      throw ConfigError(path + ": [model] has no " + key + ", which the planner needs (its default would size a " +
                        "different model); add model." + key + " to the recipe");
  return r;
}

PlanLayout parse_plan_layout(const std::string& text, int gpus, int64_t global_batch) {
  PlanLayout l;
  bool dp_given = false;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    int64_t v = 0;
    try {
      if (eq == std::string::npos) throw std::invalid_argument("");
      v = std::stoll(item.substr(eq + 1));
    } catch (const std::exception&) {
      throw ConfigError("--layout item \"" + item + "\" is not key=integer; write e.g. --layout tp=1,pp=4,ep=8");
    }
    if (v < (key == "zero" || key == "sp" ? 0 : 1))
      throw ConfigError("--layout " + key + "=" + std::to_string(v) + " is out of range; sizes are >= 1, zero and sp >= 0");
    if (key == "tp") l.tp = int(v);
    else if (key == "pp") l.pp = int(v);
    else if (key == "vpp") l.vpp = int(v);
    else if (key == "dp") l.dp = int(v), dp_given = true;
    else if (key == "ep") l.ep = int(v);
    else if (key == "etp") l.etp = int(v);
    else if (key == "zero") l.zero = int(v);
    else if (key == "sp") l.sp = v != 0;
    else if (key == "mb") l.micro_batch = v;
    else
      throw ConfigError("--layout key \"" + key + "\" is unknown; use tp, pp, vpp, dp, ep, etp, zero, sp, mb");
  }
  if (!dp_given) {
    if (gpus <= 0) throw ConfigError("--layout without dp needs --gpus N (dp = N / (tp * pp)); give one of them");
    if (gpus % (l.tp * l.pp) != 0)
      throw ConfigError("--gpus " + std::to_string(gpus) + " is not divisible by tp*pp=" + std::to_string(l.tp * l.pp) +
                        "; change --gpus or the layout");
    l.dp = gpus / (l.tp * l.pp);
  } else if (gpus > 0 && gpus != l.world()) {
    throw ConfigError("--layout gives tp*pp*dp=" + std::to_string(l.world()) + " GPUs but --gpus is " + std::to_string(gpus) +
                      "; make them agree or leave dp out");
  }
  if (global_batch % (int64_t(l.dp) * l.micro_batch) != 0)
    throw ConfigError("--global-batch " + std::to_string(global_batch) + " is not divisible by dp*mb=" +
                      std::to_string(l.dp * l.micro_batch) + "; change the batch or the layout");
  l.micro_batches = global_batch / (int64_t(l.dp) * l.micro_batch);
  return l;
}

}  // namespace sy
