// Argument checks of the CUDA backend's ops: every tensor a device tensor of the expected dtype
// and shape, failing with std::invalid_argument naming the op and the tensors (the messages of the
// CPU backend's checks). Index values are not checked here: reading them would cost a copy to the
// host per op; the CPU backend checks the same layer code's indices in the tests.
#pragma once

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "engine/tensor.h"

namespace sy::cuda::args {

struct Arg {
  const char* name;
  const Tensor& t;
};

inline std::string describe(std::initializer_list<Arg> args) {
  std::string s;
  for (const Arg& a : args) {
    s += (s.empty() ? "" : ", ") + std::string(a.name) + " ";
    s += a.t.defined() ? std::string(dtype_name(a.t.dtype())) + shape_str(a.t.shape()) : "(undefined)";
  }
  return s;
}

[[noreturn]] inline void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

inline void check(const char* op, Arg a, DType dt) {
  if (!a.t.defined()) fail(op, std::string(a.name) + " is undefined");
  if (a.t.device() != DeviceKind::Cuda) fail(op, std::string(a.name) + " is not a CUDA tensor");
  if (a.t.dtype() != dt) fail(op, describe({a}) + " must be " + dtype_name(dt));
}

// Arguments that are float32 whatever the activations' type: statistics (rstd, lse), router
// values, gradients of parameters, master weights and moments.
inline void f32(const char* op, std::initializer_list<Arg> args) {
  for (const Arg& a : args) check(op, a, DType::F32);
}

// Activations and weight copies: all float32 or all bfloat16 (mixed precision); returns which.
inline DType floats(const char* op, std::initializer_list<Arg> args) {
  const Arg& first = *args.begin();
  if (!first.t.defined()) fail(op, std::string(first.name) + " is undefined");
  const DType dt = first.t.dtype();
  if (dt != DType::F32 && dt != DType::BF16) fail(op, describe({first}) + " must be float32 or bfloat16");
  for (const Arg& a : args) check(op, a, dt);
  return dt;
}

inline void shape(const char* op, Arg a, const Shape& want) {
  if (a.t.shape() != want) fail(op, describe({a}) + ", expected shape " + shape_str(want));
}

inline void rank(const char* op, Arg a, int r) {
  if (a.t.rank() != r) fail(op, describe({a}) + " must have rank " + std::to_string(r));
}

}  // namespace sy::cuda::args
