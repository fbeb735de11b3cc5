#include "trainer/pipeline_training.h"

#include <string>

#include "engine/config_error.h"

namespace sy {

PipePlace pipeline_place(int64_t n_layers, int pp, int vpp, int rank, const std::vector<int64_t>& sizes) {
  const int64_t chunks = int64_t(pp) * vpp;
  if (n_layers < chunks)
    throw ConfigError("model.n_layers=" + std::to_string(n_layers) + " cannot fill parallel.pp * parallel.vpp = " +
                      std::to_string(chunks) + " pipeline chunks; lower pp or vpp");
  std::vector<int64_t> begin(size_t(chunks) + 1, 0);
  if (!sizes.empty()) {
    std::string list;
    int64_t sum = 0;
    for (int64_t n : sizes) list += (list.empty() ? "" : ", ") + std::to_string(n), sum += n;
    const std::string have = "parallel.pp_layers=[" + list + "]";
    if (int64_t(sizes.size()) != chunks)
      throw ConfigError(have + " has " + std::to_string(sizes.size()) + " entries for parallel.pp * parallel.vpp = " +
                        std::to_string(chunks) + " chunks; give one layer count per chunk");
    for (int64_t n : sizes)
      if (n < 1) throw ConfigError(have + " gives a chunk " + std::to_string(n) + " layers; every chunk needs at least one");
    if (sum != n_layers)
      throw ConfigError(have + " adds up to " + std::to_string(sum) + " layers, not model.n_layers=" +
                        std::to_string(n_layers) + "; make the counts sum to it");
    for (int64_t g = 0; g < chunks; ++g) begin[size_t(g) + 1] = begin[size_t(g)] + sizes[size_t(g)];
  } else {
    const int64_t base = n_layers / chunks, extra = n_layers % chunks;
    for (int64_t g = 0; g <= chunks; ++g) begin[size_t(g)] = g * base + std::min(g, extra);
  }
  auto begin_of = [&](int64_t g) { return begin[size_t(g)]; };
  PipePlace place;
  for (int v = 0; v < vpp; ++v) {
    const int64_t g = int64_t(v) * pp + rank;
    place.chunks.emplace_back(begin_of(g), begin_of(g + 1));
  }
  place.first = rank == 0;
  place.last = rank == pp - 1;
  return place;
}

std::string pipeline_layout_text(int64_t n_layers, int pp, int vpp, const std::vector<int64_t>& sizes) {
  std::vector<int64_t> layers(size_t(pp) * vpp);
  for (int q = 0; q < pp; ++q) {
    const PipePlace place = pipeline_place(n_layers, pp, vpp, q, sizes);
    for (int v = 0; v < vpp; ++v) layers[size_t(v) * pp + q] = place.chunks[v].second - place.chunks[v].first;
  }
  std::string t = " pp=" + std::to_string(pp) + (vpp > 1 ? " vpp=" + std::to_string(vpp) : "") + " (layers ";
  for (size_t g = 0; g < layers.size(); ++g) {
    if (g) t += '/';
    t += std::to_string(layers[g]);
  }
  return t + ")";
}

int64_t moe_layers_before(const ModelConfig& cfg, int64_t l) {
  int64_t n = 0;
  for (int64_t i = 0; i < l; ++i) n += cfg.layer_is_moe(i);
  return n;
}

void ModelPipelineStage::forward(int c, int m, bool recompute) {
  const LossParts parts = model_.chunk_forward(c, batch_of_(m), recompute);
  if (!recompute) on_forward_(c, m, parts);
}

void ModelPipelineStage::backward(int c, int m) { model_.chunk_backward(c, batch_of_(m), loss_scale_); }

}  // namespace sy
