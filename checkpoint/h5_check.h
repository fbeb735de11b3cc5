// One way to call the HDF5 C API: every call goes through SY_H5_CHECK, which turns a negative
// return (the API's error convention for herr_t, hid_t, htri_t and ssize_t alike) into a
// std::runtime_error naming the call site and HDF5's own innermost reason. HDF5's automatic
// error-stack printing is switched off (h5_quiet) so a failure reads as one line, not a dump.
#pragma once

#include <hdf5.h>

#include <string>

namespace sy {

// Disables HDF5's automatic error printing for the calling thread; cheap, call before any use.
void h5_quiet();

// The description of the innermost entry of HDF5's current error stack ("" if empty).
std::string h5_last_error();

[[noreturn]] void h5_fail(const char* expr, const char* file, int line);

template <class R>
R h5_checked(R result, const char* expr, const char* file, int line) {
  if (result < 0) h5_fail(expr, file, line);
  return result;
}

}  // namespace sy

#define SY_H5_CHECK(expr) ::sy::h5_checked((expr), #expr, __FILE__, __LINE__)
