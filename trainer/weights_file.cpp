#include "trainer/weights_file.h"

#include "checkpoint/weights_io.h"
#include "engine/config_error.h"

namespace sy {

namespace {

// Every EP rank's held experts, named by their global index: rank r holds the same parameter
// shapes at the same offsets as this rank, with expert indices shifted by (r - rank) * held.
void add_gathered_experts(Model& model, Communicator& ep, std::vector<std::pair<std::string, HostArray>>& arrays) {
  Backend& be = model.backend();
  const ParamStore& ps = model.params();
  const ParamSegment seg = ps.expert_segment();
  const auto layers = model.moe_layers();
  const int64_t held = layers.empty() ? 0 : layers.front()->n_local_experts();
  const size_t elem = dtype_size(ps.values().dtype());
  std::vector<std::byte> mine(seg.numel * elem), all(seg.numel * elem * ep.size());
  if (seg.numel > 0) be.download(ps.values().view(seg.begin, {seg.numel}), mine.data());
  ep.all_gather(mine.data(), all.data(), seg.numel, comm_type_of(ps.values().dtype()));
  for (int r = 0; r < ep.size(); ++r)
    for (const ParamInfo& p : ps.infos()) {
      if (!p.is_expert()) continue;
      HostArray a;
      a.shape = p.shape;
      a.dtype = ps.values().dtype();
      const std::byte* src = all.data() + (r * seg.numel + p.offset - seg.begin) * elem;
      a.bytes.assign(src, src + p.numel * elem);
      arrays.emplace_back(expert_param_name(p, p.expert + (r - ep.rank()) * held), std::move(a));
    }
}

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

}  // namespace

void save_weights(Model& model, const std::string& path, const std::map<std::string, std::string>& attrs,
                  WeightsGather groups, bool write) {
  Backend& be = model.backend();
  std::vector<std::pair<std::string, HostArray>> arrays;
  const ParamStore& ps = model.params();
  const bool experts = groups.ep && groups.ep->size() > 1, rows = groups.tp && groups.tp->size() > 1;
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const ParamInfo& p = ps.infos()[i];
    if (experts && p.is_expert()) continue;
    if (rows && p.tp == TpSplit::Rows) arrays.emplace_back(p.name, gather_rows(be, *groups.tp, p, ps.value(int(i))));
    else arrays.emplace_back(p.name, download_array(be, ps.value(int(i))));
  }
  if (experts) add_gathered_experts(model, *groups.ep, arrays);
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
