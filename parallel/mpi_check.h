// Every MPI call goes through SY_MPI_CHECK. The communicators install MPI_ERRORS_RETURN, so a
// failing call returns here and becomes an exception that says where and what failed, instead
// of MPI's default abort of the whole job with a bare error class.
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace sy::detail {

inline void mpi_check(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                           (len > 0 ? std::string(text, len) : "MPI error " + std::to_string(rc)));
}

}  // namespace sy::detail

#define SY_MPI_CHECK(call) ::sy::detail::mpi_check((call), #call, __FILE__, __LINE__)
