#include "engine/tensor.h"

#include <sstream>

namespace sy {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::BF16: return 2;
  }
  return 0;
}

bool is_floating(DType dt) { return dt != DType::I32; }

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::BF16: return "bfloat16";
  }
  return "?";
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(s));
    n *= d;
  }
  return n;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype)
    : storage_(std::move(storage)), offset_(offset_bytes), shape_(std::move(shape)), dtype_(dtype) {
  numel_ = shape_numel(shape_);
  if (offset_ + nbytes() > storage_->size)
    throw std::out_of_range("tensor view " + shape_str(shape_) + " exceeds its storage");
}

Tensor Tensor::view(int64_t elem_offset, Shape shape) const {
  if (!defined()) throw std::logic_error("view of an undefined tensor");
  if (elem_offset < 0 || elem_offset + shape_numel(shape) > numel_)
    throw std::out_of_range("view " + shape_str(shape) + " at " + std::to_string(elem_offset) +
                            " outside tensor " + shape_str(shape_));
  return Tensor(storage_, offset_ + static_cast<size_t>(elem_offset) * dtype_size(dtype_), std::move(shape),
                dtype_);
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  if (shape_.empty() || begin < 0 || end < begin || end > shape_[0])
    throw std::out_of_range("rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " +
                            shape_str(shape_));
  Shape s = shape_;
  s[0] = end - begin;
  const int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
  return view(begin * row, std::move(s));
}

void Tensor::check_dtype(DType want) const {
  if (want != dtype_)
    throw std::logic_error(std::string("tensor is ") + dtype_name(dtype_) + ", accessed as " + dtype_name(want));
}

}  // namespace sy
