// Weights files: a flat HDF5 file with one dataset per array at the root, named exactly by the
// array's name (dots and all: "layers.3.moe.experts.5.w1"), stored in its own dtype and shape,
// plus string attributes on the root group (the recipe, the step). h5py, h5dump and the PyTorch
// reference (tests/reference/moe_ref.py) read it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"

namespace sy {

// An array on the host in one of the engine's dtypes: `bytes` holds numel * dtype_size elements,
// row-major.
struct HostArray {
  Shape shape;
  DType dtype = DType::F32;
  std::vector<std::byte> bytes;

  int64_t numel() const { return shape_numel(shape); }
  // Every element converted to double (int32 and float32 convert exactly).
  std::vector<double> to_f64() const;
  // The elements as their own type; throws std::logic_error if T is not the array's dtype.
  template <class T> std::vector<T> values() const;
};

HostArray host_array(Shape shape, const std::vector<float>& values);
HostArray host_array(Shape shape, const std::vector<double>& values);
HostArray host_array(Shape shape, const std::vector<int32_t>& values);

// A tensor's contents in its own dtype, and back; upload converts between F32 and F64 when the
// file and the tensor disagree (shape must match element for element).
HostArray download_array(Backend& be, const Tensor& t);
void upload_array(Backend& be, const HostArray& a, const Tensor& t);

// Writes `path + ".tmp"`, flushes it to disk and renames it over `path`: a crash mid-write
// leaves the previous file intact. Names must be unique, non-empty and free of '/'.
void write_weights_h5(const std::string& path, const std::vector<std::pair<std::string, HostArray>>& arrays,
                      const std::map<std::string, std::string>& attrs = {});

// Every dataset at the file's root (float32, float64 or 32-bit signed integer; anything else is an
// error). A missing or unreadable file throws ConfigError; damage found while reading throws
// std::runtime_error.
std::map<std::string, HostArray> read_weights_h5(const std::string& path);

// The root group's string attributes (fixed- or variable-length); attributes of other types are
// skipped.
std::map<std::string, std::string> read_attrs_h5(const std::string& path);

}  // namespace sy
