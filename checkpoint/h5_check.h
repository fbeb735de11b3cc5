// One way to call the HDF5 C API: every call goes through SY_H5_CHECK, which turns a negative
// return (the API's error convention for herr_t, hid_t, htri_t and ssize_t alike) into a
// std::runtime_error naming the call site and HDF5's own innermost reason. HDF5's automatic
// error-stack printing is switched off (h5_quiet) so a failure reads as one line, not a dump.
#pragma once

#include <stdexcept>

#include "engine/tensor.h"

#include <hdf5.h>

#include <mutex>
#include <string>

namespace sy {

// Disables HDF5's automatic error printing for the calling thread; cheap, call before any use.
void h5_quiet();

// The description of the innermost entry of HDF5's current error stack ("" if empty).
std::string h5_last_error();

// Debian's libhdf5 is not thread-safe: every use of the HDF5 API, from any file, holds this lock.
std::mutex& h5_mutex();

[[noreturn]] void h5_fail(const char* expr, const char* file, int line);

template <class R>
R h5_checked(R result, const char* expr, const char* file, int line) {
  if (result < 0) h5_fail(expr, file, line);
  return result;
}

// The HDF5 types for an engine dtype: `memory` is what buffers hold (native), `file` what files
// store (little-endian always, so files and their checksums are the same on every host).
struct H5Types {
  hid_t memory;
  hid_t file;
};
inline H5Types h5_types(DType dt) {
  switch (dt) {
    case DType::F32: return {H5T_NATIVE_FLOAT, H5T_IEEE_F32LE};
    case DType::F64: return {H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE};
    case DType::I32: return {H5T_NATIVE_INT32, H5T_STD_I32LE};
    case DType::BF16: break;  // files hold the float32 master weights, never the bf16 copy
  }
  throw std::logic_error("h5_types: unknown dtype");
}

}  // namespace sy

#define SY_H5_CHECK(expr) ::sy::h5_checked((expr), #expr, __FILE__, __LINE__)

namespace sy {

// Owns one HDF5 identifier. The destructor only runs on paths that are already failing, so it
// ignores the close status; close() is the checked way to release on the success path.
class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() {
    if (id_ >= 0) closer_(id_);
  }
  hid_t get() const { return id_; }
  void close() {
    const hid_t id = id_;
    id_ = -1;
    SY_H5_CHECK(closer_(id));
  }

 private:
  hid_t id_;
  Closer closer_;
};

}  // namespace sy
