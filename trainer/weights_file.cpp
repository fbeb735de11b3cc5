#include "trainer/weights_file.h"

#include <cstring>

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

// Every stage's arrays to stage 0 of the pipeline group, appended to its own: one message of
// int64 words per stage (name, dtype, shape, bytes of each array, in order).
void gather_stages(Communicator& pp, std::vector<std::pair<std::string, HostArray>>& arrays) {
  auto words = [](size_t bytes) { return int64_t((bytes + 7) / 8); };
  if (pp.rank() > 0) {
    std::vector<int64_t> msg{int64_t(arrays.size())};
    for (const auto& [name, a] : arrays) {
      msg.push_back(int64_t(name.size()));
      const size_t at = msg.size();
      msg.resize(at + size_t(words(name.size())));
      std::memcpy(msg.data() + at, name.data(), name.size());
      msg.push_back(int64_t(a.dtype));
      msg.push_back(int64_t(a.shape.size()));
      for (int64_t d : a.shape) msg.push_back(d);
      msg.push_back(int64_t(a.bytes.size()));
      const size_t b = msg.size();
      msg.resize(b + size_t(words(a.bytes.size())));
      std::memcpy(msg.data() + b, a.bytes.data(), a.bytes.size());
    }
    int64_t n = int64_t(msg.size());
    CommRequest r = pp.isend(&n, 1, CommType::I64, 0, 0);
    pp.wait(r);
    r = pp.isend(msg.data(), n, CommType::I64, 0, 1);
    pp.wait(r);
    return;
  }
  for (int q = 1; q < pp.size(); ++q) {
    int64_t n = 0;
    CommRequest r = pp.irecv(&n, 1, CommType::I64, q, 0);
    pp.wait(r);
    std::vector<int64_t> msg(static_cast<size_t>(n));
    r = pp.irecv(msg.data(), n, CommType::I64, q, 1);
    pp.wait(r);
    size_t at = 0;
    const int64_t count = msg[at++];
    for (int64_t i = 0; i < count; ++i) {
      const size_t len = size_t(msg[at++]);
      std::string name(reinterpret_cast<const char*>(msg.data() + at), len);
      at += size_t(words(len));
      HostArray a;
      a.dtype = DType(msg[at++]);
      a.shape.resize(size_t(msg[at++]));
      for (auto& d : a.shape) d = msg[at++];
      a.bytes.resize(size_t(msg[at++]));
      std::memcpy(a.bytes.data(), msg.data() + at, a.bytes.size());
      at += size_t(words(a.bytes.size()));
      // A tied embedding's second copy (last stage) is the first stage's table again.
      bool have = false;
      for (const auto& kv : arrays) have = have || kv.first == name;
      if (!have) arrays.emplace_back(std::move(name), std::move(a));
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
  if (groups.pp && groups.pp->size() > 1) gather_stages(*groups.pp, arrays);
  if (write) write_weights_h5(path, arrays, attrs);
}

void load_weights(Model& model, const std::string& path) {
  Backend& be = model.backend();
  const std::map<std::string, HostArray> file = read_weights_h5(path);
  auto find = [&](const std::string& name, const Shape& shape) -> const HostArray& {
    auto it = file.find(name);
    if (it == file.end())
      throw ConfigError(path + ": no dataset " + name + "; the weights were written for another model config");
    if (it->second.shape != shape)
      throw ConfigError(path + ": " + name + " has shape " + shape_str(it->second.shape) + ", the model expects " +
                        shape_str(shape) + "; use the recipe the weights were trained with");
    return it->second;
  };
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const ParamInfo& p = ps.infos()[i];
    const HostArray& whole = find(p.name, p.global_shape);
    // This rank's block: elements [global_offset, global_offset + numel) of the flattening, as a
    // checkpoint piece is (checkpoint/checkpoint.h).
    HostArray block;
    block.shape = ps.value(int(i)).shape();
    block.dtype = whole.dtype;
    const size_t elem = dtype_size(whole.dtype);
    block.bytes.assign(whole.bytes.begin() + std::ptrdiff_t(size_t(p.global_offset) * elem),
                       whole.bytes.begin() + std::ptrdiff_t(size_t(p.global_offset + p.numel) * elem));
    upload_array(be, block, ps.value(int(i)));
  }
  for (auto& [name, t] : model.buffers()) upload_array(be, find(name, t.shape()), t);
}

}  // namespace sy
