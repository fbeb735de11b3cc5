// Tensor: a typed, contiguous, row-major view into a buffer owned by a backend.
// Tensors are cheap handles (shared ownership of the storage); a view shares storage
// with its parent. There is no autograd: layers call forward and backward ops explicitly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/bf16_bits.h"

namespace sy {

// BF16: bfloat16 activations and weight copies of mixed-precision training (the CUDA backend;
// the CPU reference computes in F32 and F64 only).
enum class DType : uint8_t { F32, F64, I32, BF16 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
bool is_floating(DType dt);

// The type of what a computation in `dt` keeps at float precision or better: normalisation and
// softmax statistics (rstd, lse), RoPE tables, router logits, scores and weights. bfloat16's
// 8-bit mantissa is enough for activations but not for these.
constexpr DType accum_dtype(DType dt) { return dt == DType::BF16 ? DType::F32 : dt; }

// Host storage of one bfloat16 (the upper 16 bits of a float32); arithmetic happens on a device.
struct bfloat16 {
  uint16_t bits;
};

// Host conversions (engine/bf16_bits.h: as CUDA's), for host-side code that must compute on
// bfloat16 buffers (e.g. reducing tensor-parallel partial sums in float32).
constexpr float bf16_to_float(bfloat16 v) { return bf16_bits_to_f32(v.bits); }
constexpr bfloat16 float_to_bf16(float f) { return {f32_to_bf16_bits(f)}; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::BF16; }

enum class DeviceKind : uint8_t { Host, Cuda };

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

struct Storage {
  std::shared_ptr<std::byte> bytes;  // owner; the deleter belongs to the allocating backend
  size_t size = 0;                   // bytes
  DeviceKind device = DeviceKind::Host;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  DeviceKind device() const { return storage_ ? storage_->device : DeviceKind::Host; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

  void* raw() const { return storage_->bytes.get() + offset_; }
  template <class T> T* data() const {
    check_dtype(dtype_of<T>());
    return reinterpret_cast<T*>(raw());
  }

  // A contiguous view of `shape` starting `elem_offset` elements into this tensor.
  Tensor view(int64_t elem_offset, Shape shape) const;
  // Same elements, another shape (numel must match).
  Tensor reshape(Shape shape) const { return view(0, std::move(shape)); }
  // Rows [begin, end) along the leading dimension.
  Tensor rows(int64_t begin, int64_t end) const;

  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t offset_bytes() const { return offset_; }

 private:
  void check_dtype(DType want) const;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
};

}  // namespace sy
