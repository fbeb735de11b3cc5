// GPU specifications and the planner's stated assumptions, from one data file (planner/gpus.toml,
// each figure with its source).
#pragma once

#include <string>
#include <vector>

namespace sy {

struct GpuSpec {
  std::string key;           // "h100"
  std::string name, source;
  double memory_gib = 0, bf16_tflops = 0, nvlink_gbs = 0, network_gbs = 0;
  int nvlink_domain = 1;
  double memory_bytes() const { return memory_gib * 1024.0 * 1024.0 * 1024.0; }
};

struct PlannerAssumptions {
  double compute_efficiency = 0.6, comm_efficiency = 0.8;
  double reserved_gib = 3.0, fragmentation = 0.1;
  double dropless_imbalance = 1.5;
};

struct GpuCatalog {
  PlannerAssumptions assume;
  std::vector<GpuSpec> gpus;
  // ConfigError naming the unknown GPU and the known ones.
  const GpuSpec& find(const std::string& key) const;
};

// The default file is the source tree's planner/gpus.toml. ConfigError (one line) naming the file
// and the missing or malformed key.
GpuCatalog load_gpu_catalog(const std::string& path = "");
std::string default_gpu_catalog_path();

}  // namespace sy
