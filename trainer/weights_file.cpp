#include "trainer/weights_file.h"

#include "checkpoint/weights_io.h"
#include "engine/config_error.h"

namespace sy {

namespace {

// A TP-split parameter whole: the TP ranks' row blocks, in rank order.
HostArray gather_rows(Backend& be, Communicator& tp, const ParamInfo& p, const Tensor& value) {
  const HostArray mine = download_array(be, value);
  HostArray a;
  a.shape = p.global_shape;
  a.dtype = mine.dtype;
  a.bytes.resize(mine.bytes.size() * tp.size());
  tp.all_gather(mine.bytes.data(), a.bytes.data(), p.numel, comm_type_of(mine.dtype));
  return a;
}

// This rank's experts whole (under expert tensor parallelism each matrix's slices gathered over
// the ETP group), then under expert parallelism every EP rank's, named by their global index:
// rank r holds the same parameter shapes in the same order as this rank, with expert indices
// shifted by (r - rank) * held.
void add_experts(Model& model, const WeightsGather& g, std::vector<std::pair<std::string, HostArray>>& arrays) {
  Backend& be = model.backend();
  const ParamStore& ps = model.params();
  const bool sliced = g.etp && g.etp->size() > 1, spread = g.ep && g.ep->size() > 1;
  std::vector<std::pair<const ParamInfo*, HostArray>> mine;
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const ParamInfo& p = ps.infos()[i];
    if (!p.is_expert()) continue;
    mine.emplace_back(&p, sliced ? gather_rows(be, *g.etp, p, ps.value(int(i))) : download_array(be, ps.value(int(i))));
  }
  if (!spread) {
    for (auto& [p, a] : mine) arrays.emplace_back(p->name, std::move(a));
    return;
  }
  const auto layers = model.moe_layers();
  const int64_t held = layers.empty() ? 0 : layers.front()->n_local_experts();
  const DType dt = ps.values().dtype();
  const size_t elem = dtype_size(dt);
  std::vector<std::byte> cat;
  for (const auto& [p, a] : mine) cat.insert(cat.end(), a.bytes.begin(), a.bytes.end());
  std::vector<std::byte> all(cat.size() * g.ep->size());
  g.ep->all_gather(cat.data(), all.data(), int64_t(cat.size() / elem), comm_type_of(dt));
  for (int r = 0; r < g.ep->size(); ++r) {
    const std::byte* src = all.data() + r * cat.size();
    for (const auto& [p, a] : mine) {
      HostArray b;
      b.shape = a.shape;
      b.dtype = a.dtype;
      b.bytes.assign(src, src + a.bytes.size());
      src += a.bytes.size();
      arrays.emplace_back(expert_param_name(*p, p->expert + (r - g.ep->rank()) * held), std::move(b));
    }
  }
}

}  // namespace

void save_weights(Model& model, const std::string& path, const std::map<std::string, std::string>& attrs,
                  WeightsGather groups, bool write) {
  Backend& be = model.backend();
  std::vector<std::pair<std::string, HostArray>> arrays;
  const ParamStore& ps = model.params();
  const bool rows = groups.tp && groups.tp->size() > 1;
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const ParamInfo& p = ps.infos()[i];
    if (p.is_expert()) continue;  // split over other groups than TP: add_experts
    if (rows && p.tp == TpSplit::Rows) arrays.emplace_back(p.name, gather_rows(be, *groups.tp, p, ps.value(int(i))));
    else arrays.emplace_back(p.name, download_array(be, ps.value(int(i))));
  }
  add_experts(model, groups, arrays);
  for (auto& [name, t] : model.buffers()) arrays.emplace_back(name, download_array(be, t));
  if (write) write_weights_h5(path, arrays, attrs);
}

void load_weights(Model& model, const std::string& path) {
  Backend& be = model.backend();
  const std::map<std::string, HostArray> file = read_weights_h5(path);
  auto load_one = [&](const std::string& name, const Tensor& t) {
    auto it = file.find(name);
    if (it == file.end())
      throw ConfigError(path + ": no dataset " + name + "; the weights were written for another model config");
    if (it->second.shape != t.shape())
      throw ConfigError(path + ": " + name + " has shape " + shape_str(it->second.shape) + ", the model expects " +
                        shape_str(t.shape()) + "; use the recipe the weights were trained with");
    upload_array(be, it->second, t);
  };
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i) load_one(ps.infos()[i].name, ps.value(int(i)));
  for (auto& [name, t] : model.buffers()) load_one(name, t);
}

}  // namespace sy
