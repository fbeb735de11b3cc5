#include "planner/gpu_specs.h"

#include <toml++/toml.h>

#include "engine/config_error.h"

namespace sy {

std::string default_gpu_catalog_path() { return SY_GPU_SPECS_FILE; }

const GpuSpec& GpuCatalog::find(const std::string& key) const {
  std::string known;
  for (const GpuSpec& g : gpus) {
    if (g.key == key) return g;
    known += (known.empty() ? "" : "|") + g.key;
  }
  throw ConfigError("unknown GPU \"" + key + "\"; choose --gpu " + known + " (or add it to planner/gpus.toml)");
}

GpuCatalog load_gpu_catalog(const std::string& path_in) {
  const std::string path = path_in.empty() ? default_gpu_catalog_path() : path_in;
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path + ": " + std::string(e.description()) + "; fix the GPU specification file");
  }
  auto number = [&](const toml::table& tab, const std::string& where, const char* key) {
    const auto v = tab[key].value<double>();
    if (!v || *v <= 0) throw ConfigError(path + ": [" + where + "] " + key + " is missing or not a positive number; set it");
    return *v;
  };
  GpuCatalog c;
  const toml::table* a = t["assumptions"].as_table();
  if (!a) throw ConfigError(path + ": no [assumptions] table; add it (see docs/planner.md)");
  c.assume.compute_efficiency = number(*a, "assumptions", "compute_efficiency");
  c.assume.comm_efficiency = number(*a, "assumptions", "comm_efficiency");
  c.assume.reserved_gib = number(*a, "assumptions", "reserved_gib");
  c.assume.fragmentation = number(*a, "assumptions", "fragmentation");
  c.assume.dropless_imbalance = number(*a, "assumptions", "dropless_imbalance");
  for (const auto& [k, node] : t) {
    const std::string key(k.str());
    if (key == "assumptions") continue;
    const toml::table* g = node.as_table();
    if (!g) throw ConfigError(path + ": " + key + " is not a table; write it as [" + key + "]");
    GpuSpec s;
    s.key = key;
    s.name = (*g)["name"].value_or(key);
    s.source = (*g)["source"].value_or(std::string());
    if (s.source.empty()) throw ConfigError(path + ": [" + key + "] has no source; cite where its figures come from");
    s.memory_gib = number(*g, key, "memory_gib");
    s.bf16_tflops = number(*g, key, "bf16_tflops");
    s.nvlink_gbs = number(*g, key, "nvlink_gbs");
    s.network_gbs = number(*g, key, "network_gbs");
    s.nvlink_domain = int(number(*g, key, "nvlink_domain"));
    c.gpus.push_back(std::move(s));
  }
  if (c.gpus.empty()) throw ConfigError(path + ": no GPU tables; add one such as [h100]");
  return c;
}

}  // namespace sy
