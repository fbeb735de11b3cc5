#include "engine/params.h"

#include <cmath>
#include <stdexcept>

#include "engine/host_io.h"
#include "engine/rng.h"

namespace sy {

namespace {

std::string expert_tag(int64_t e) { return ".experts." + std::to_string(e) + "."; }

// FNV-1a: a stable 64-bit key for a parameter's name (the initialisation stream).
uint64_t name_key(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

std::string expert_param_name(const ParamInfo& p, int64_t expert) {
  const std::string from = expert_tag(p.expert);
  const size_t at = p.name.find(from);
  if (at == std::string::npos) throw std::logic_error("expert parameter " + p.name + " lacks " + from);
  return p.name.substr(0, at) + expert_tag(expert) + p.name.substr(at + from.size());
}

int ParamStore::add(const std::string& name, Shape shape, ParamKind kind, double init_std, int64_t expert,
                    ParamSplit split) {
  if (values_.defined()) throw std::logic_error("ParamStore::add after allocate: " + name);
  if (find(name) >= 0) throw std::logic_error("duplicate parameter " + name);
  if (expert >= 0 && name.find(expert_tag(expert)) == std::string::npos)
    throw std::logic_error("expert parameter " + name + " must hold " + expert_tag(expert));
  ParamInfo p;
  p.name = name;
  p.numel = shape_numel(shape);
  p.shape = std::move(shape);
  p.kind = kind;
  p.init_std = init_std;
  p.expert = expert;
  p.tp = split.tp;
  p.global_shape = p.shape;
  if (split.tp == TpSplit::Rows) {
    p.global_shape[0] *= split.tp_size;
    p.global_offset = split.tp_rank * p.numel;
  }
  infos_.push_back(std::move(p));
  return static_cast<int>(infos_.size()) - 1;
}

void ParamStore::allocate(Backend& be, DType dtype, int64_t dense_pad, int64_t expert_pad) {
  auto round_up = [](int64_t n, int64_t m) { return (n + m - 1) / m * m; };
  int64_t at = 0;
  for (int k = 0; k < 3; ++k) {
    ParamSegment& seg = segments_[k];
    seg = {at, 0, 0};
    for (ParamInfo& p : infos_)
      if (int(p.segment()) == k) p.offset = seg.begin + seg.numel, seg.numel += p.numel;
    seg.padded = round_up(seg.numel, SegmentKind(k) == SegmentKind::Expert ? expert_pad : dense_pad);
    at += seg.padded;
  }
  {
    MemScope scope(be, MemCategory::Parameters);
    values_ = be.zeros({at}, dtype);
  }
  MemScope scope(be, MemCategory::Gradients);
  grads_ = be.zeros({at}, dtype);
}

void ParamStore::add_compute_copy(Backend& be, DType dtype) {
  MemScope scope(be, MemCategory::Parameters);
  compute_ = be.empty({values_.numel()}, dtype);
  refresh_compute_copy(be);
}

void ParamStore::refresh_compute_copy(Backend& be) {
  if (compute_.defined()) be.convert(values_, compute_);
}

int64_t ParamStore::total_numel() const {
  return segments_[0].numel + segments_[1].numel + segments_[2].numel;
}

int64_t ParamStore::dense_global_numel() const {
  int64_t n = 0;
  for (const ParamInfo& p : infos_)
    if (!p.is_expert()) n += shape_numel(p.global_shape);
  return n;
}

void ParamStore::initialize(Backend& be, uint64_t seed) {
  for (size_t i = 0; i < infos_.size(); ++i) {
    const ParamInfo& p = infos_[i];
    std::vector<double> host(static_cast<size_t>(p.numel));
    if (p.kind == ParamKind::Norm) {
      std::fill(host.begin(), host.end(), 1.0);
    } else {
      // The whole tensor's stream, of which this rank keeps its block: a TP rank starts from
      // exactly the rows the 1-rank run has.
      Philox rng(seed, name_key(p.name));
      for (int64_t j = 0; j < p.global_offset; ++j) rng.normal();
      for (auto& x : host) x = p.init_std * rng.normal();
    }
    upload_f64(be, host, value(static_cast<int>(i)));
  }
}

int ParamStore::find(const std::string& name) const {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == name) return static_cast<int>(i);
  return -1;
}

Tensor ParamStore::fused(const Tensor& flat, int first, int count) const {
  const ParamInfo& a = infos_.at(first);
  int64_t rows = 0;
  const int64_t cols = a.shape.back();
  for (int i = first; i < first + count; ++i) {
    const ParamInfo& p = infos_.at(i);
    if (p.shape.size() != 2 || p.shape[1] != cols || (i > first && p.offset != infos_[i - 1].offset + infos_[i - 1].numel))
      throw std::logic_error("parameters from " + a.name + " are not fusable");
    rows += p.shape[0];
  }
  return flat.view(a.offset, {rows, cols});
}

}  // namespace sy
