#include "trainer/train_state.h"

#include <algorithm>
#include <cstring>

#include "engine/config_error.h"

namespace sy {

namespace {

const char* kExpAvg = "optim.exp_avg.";
const char* kExpAvgSq = "optim.exp_avg_sq.";
const char* kBuffer = "buffer.";

// Copies elements [offset, offset + count) of a tensor of global shape `shape` out of `src`.
void add_piece(StateSnapshot& s, Backend& be, const std::string& name, const Shape& shape, const Tensor& src,
               int64_t offset) {
  std::vector<std::byte> host(src.nbytes());
  be.download(src, host.data());
  TensorPiece p;
  p.name = name;
  p.global_shape = shape;
  p.dtype = src.dtype();
  p.offset = offset;
  p.count = src.numel();
  p.data = host.data();  // stays valid: moving the vector below keeps its heap block
  s.buffers.push_back(std::move(host));
  s.pieces.push_back(std::move(p));
}

void load_piece(const CheckpointReader& ckpt, Backend& be, const std::string& name, const Shape& shape,
                const Tensor& dst, int64_t offset) {
  const auto names = ckpt.names();
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw ConfigError("checkpoint has no tensor " + name + "; it was written for another model config");
  if (ckpt.shape(name) != shape)
    throw ConfigError("checkpoint tensor " + name + " has shape " + shape_str(ckpt.shape(name)) +
                      ", the model expects " + shape_str(shape) + "; resume with the recipe that wrote it");
  std::vector<std::byte> host(dst.nbytes());
  ckpt.read(name, offset, dst.numel(), host.data(), dst.dtype());
  be.upload(host.data(), dst);
}

// Calls f(param, lo, hi, at) for the part [lo, hi) of each parameter inside the optimizer's
// pieces; `at` is where lo's moments are in the optimizer's state.
template <class F> void for_each_in_shard(const ParamStore& ps, const Optimizer& opt, F&& f) {
  for (size_t i = 0; i < opt.pieces().size(); ++i) {
    const OptimPiece& pc = opt.pieces()[i];
    for (const ParamInfo& p : ps.infos()) {
      const int64_t lo = std::max(p.offset, pc.begin), hi = std::min(p.offset + p.numel, pc.end);
      if (lo < hi) f(p, lo, hi, opt.state_offset(i) + lo - pc.begin);
    }
  }
}

}  // namespace

StateSnapshot snapshot_state(Model& model, const Optimizer& opt, bool write_buffers,
                             const std::function<bool(const ParamInfo&)>& writes_value,
                             const std::function<bool(const ParamInfo&)>& writes_moments) {
  StateSnapshot s;
  Backend& be = model.backend();
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const ParamInfo& p = ps.infos()[i];
    if (writes_value(p)) add_piece(s, be, p.name, p.global_shape, ps.value(int(i)), p.global_offset);
  }
  if (write_buffers)
    for (auto& [name, t] : model.buffers()) add_piece(s, be, kBuffer + name, t.shape(), t, 0);
  if (opt.exp_avg().defined()) {
    for_each_in_shard(ps, opt, [&](const ParamInfo& p, int64_t lo, int64_t hi, int64_t at) {
      if (!writes_moments(p)) return;
      const int64_t off = p.global_offset + lo - p.offset;
      add_piece(s, be, kExpAvg + p.name, p.global_shape, opt.exp_avg().view(at, {hi - lo}), off);
      add_piece(s, be, kExpAvgSq + p.name, p.global_shape, opt.exp_avg_sq().view(at, {hi - lo}), off);
    });
  }
  return s;
}

int64_t restore_state(const CheckpointReader& ckpt, Model& model, Optimizer& opt) {
  Backend& be = model.backend();
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i) {
    const ParamInfo& p = ps.infos()[i];
    load_piece(ckpt, be, p.name, p.global_shape, ps.value(int(i)), p.global_offset);
  }
  for (auto& [name, t] : model.buffers()) load_piece(ckpt, be, kBuffer + name, t.shape(), t, 0);
  if (opt.exp_avg().defined()) {
    for_each_in_shard(ps, opt, [&](const ParamInfo& p, int64_t lo, int64_t hi, int64_t at) {
      const int64_t off = p.global_offset + lo - p.offset;
      load_piece(ckpt, be, kExpAvg + p.name, p.global_shape, opt.exp_avg().view(at, {hi - lo}), off);
      load_piece(ckpt, be, kExpAvgSq + p.name, p.global_shape, opt.exp_avg_sq().view(at, {hi - lo}), off);
    });
  }
  opt.restore_steps_taken(ckpt.step());
  return ckpt.step();
}

std::string resume_directory(const std::string& resume, const std::string& out_dir) {
  if (resume == "none") return "";
  if (resume == "auto") return find_resume_checkpoint(out_dir);
  return resume;
}

}  // namespace sy
