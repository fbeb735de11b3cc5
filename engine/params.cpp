#include "engine/params.h"

#include <cmath>
#include <stdexcept>

#include "engine/host_io.h"
#include "engine/rng.h"

namespace sy {

int ParamStore::add(const std::string& name, Shape shape, ParamKind kind, double init_std, bool expert) {
  if (values_.defined()) throw std::logic_error("ParamStore::add after allocate: " + name);
  if (find(name) >= 0) throw std::logic_error("duplicate parameter " + name);
  ParamInfo p;
  p.name = name;
  p.numel = shape_numel(shape);
  p.shape = std::move(shape);
  p.kind = kind;
  p.offset = total_;
  p.init_std = init_std;
  p.expert = expert;
  total_ += p.numel;
  infos_.push_back(std::move(p));
  return static_cast<int>(infos_.size()) - 1;
}

void ParamStore::allocate(Backend& be, DType dtype, int64_t pad_multiple) {
  const int64_t padded = (total_ + pad_multiple - 1) / pad_multiple * pad_multiple;
  values_ = be.zeros({padded}, dtype);
  grads_ = be.zeros({padded}, dtype);
}

void ParamStore::initialize(Backend& be, uint64_t seed) {
  // Each parameter draws from its own stream keyed by its index, so adding a parameter at the
  // end does not change the others' initial values.
  for (size_t i = 0; i < infos_.size(); ++i) {
    const ParamInfo& p = infos_[i];
    std::vector<double> host(static_cast<size_t>(p.numel));
    if (p.kind == ParamKind::Norm) {
      std::fill(host.begin(), host.end(), 1.0);
    } else {
      Philox rng(seed, 0x9a7a000000000000ull + i);
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
