#include "engine/host_io.h"

#include <stdexcept>

namespace sy {

std::vector<double> download_f64(Backend& be, const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::F64) {
    be.download(t, out.data());
  } else if (t.dtype() == DType::F32) {
    std::vector<float> f(out.size());
    be.download(t, f.data());
    out.assign(f.begin(), f.end());
  } else {
    std::vector<int32_t> i(out.size());
    be.download(t, i.data());
    out.assign(i.begin(), i.end());
  }
  return out;
}

void upload_f64(Backend& be, const std::vector<double>& host, const Tensor& t) {
  if (static_cast<int64_t>(host.size()) != t.numel()) throw std::invalid_argument("upload_f64: size mismatch");
  if (t.dtype() == DType::F64) {
    be.upload(host.data(), t);
  } else if (t.dtype() == DType::F32) {
    std::vector<float> f(host.begin(), host.end());
    be.upload(f.data(), t);
  } else {
    std::vector<int32_t> i(host.begin(), host.end());
    be.upload(i.data(), t);
  }
}

}  // namespace sy
