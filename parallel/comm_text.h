// The pieces of communicator error messages, for implementations that do not include mpi.h (the
// NCCL communicator, compiled by nvcc too). Defined in mpi_wait.cpp; mpi_wait.h declares the same.
#pragma once

#include <string>
#include <vector>

namespace sy::detail {

// "5.0": timeouts as the messages print them.
std::string seconds(double s);

// "0,1,2,3"; runs of five or more consecutive ranks shrink to "a-b" so big groups stay one line.
std::string rank_list(const std::vector<int>& ranks);

}  // namespace sy::detail
