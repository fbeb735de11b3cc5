// Argument validation shared by every op, and the backend factory.
#include <sstream>
#include <stdexcept>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/cpu_kernels.h"

namespace sy {

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

namespace cpu {

void dnnl_check(dnnl_status_t status, const char* call, const char* file, int line) {
  if (status == dnnl_success) return;
  std::ostringstream o;
  o << file << ":" << line << ": oneDNN call " << call << " failed with status " << int(status);
  throw std::runtime_error(o.str());
}

std::string describe(std::initializer_list<Arg> args) {
  std::string s;
  for (const Arg& a : args) {
    if (!s.empty()) s += ", ";
    s += a.name;
    s += " ";
    s += a.t.defined() ? std::string(dtype_name(a.t.dtype())) + shape_str(a.t.shape()) : "(undefined)";
  }
  return s;
}

void fail(const char* op, const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); }

static void check_host(const char* op, Arg a) {
  if (!a.t.defined()) fail(op, std::string(a.name) + " is undefined");
  if (a.t.device() != DeviceKind::Host) fail(op, std::string(a.name) + " is not a host tensor");
}

DType check_float(const char* op, std::initializer_list<Arg> args) {
  DType dt = DType::F32;
  bool first = true;
  for (const Arg& a : args) {
    check_host(op, a);
    if (a.t.dtype() == DType::I32) fail(op, "expected float tensors, got " + describe(args));
    if (!first && a.t.dtype() != dt) fail(op, "mixed float dtypes: " + describe(args));
    dt = a.t.dtype();
    first = false;
  }
  return dt;
}

void check_dtype(const char* op, Arg a, DType dt) {
  check_host(op, a);
  if (a.t.dtype() != dt) fail(op, describe({a}) + " must be " + dtype_name(dt));
}

void check_shape(const char* op, Arg a, const Shape& want) {
  check_host(op, a);
  if (a.t.shape() != want) fail(op, describe({a}) + ", expected shape " + shape_str(want));
}

void check_rank(const char* op, Arg a, int rank) {
  check_host(op, a);
  if (a.t.rank() != rank) fail(op, describe({a}) + " must have rank " + std::to_string(rank));
}

void check_numel(const char* op, Arg a, int64_t numel) {
  check_host(op, a);
  if (a.t.numel() != numel) fail(op, describe({a}) + " must hold " + std::to_string(numel) + " elements");
}

void check_indices(const char* op, Arg a, int64_t lo, int64_t hi, bool allow_negative) {
  check_dtype(op, a, DType::I32);
  const int32_t* p = a.t.data<int32_t>();
  const int64_t n = a.t.numel();
  int64_t bad = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = p[i];
    if ((v < lo || v >= hi) && !(allow_negative && v < 0)) {
      bad = i;
      break;
    }
  }
  if (bad >= 0)
    throw std::out_of_range(std::string(op) + ": " + a.name + "[" + std::to_string(bad) + "] = " +
                            std::to_string(p[bad]) + " outside [" + std::to_string(lo) + ", " + std::to_string(hi) +
                            ")");
}

}  // namespace cpu
}  // namespace sy
