// Waiting on MPI requests against a deadline, and the pieces of the timeout messages. Shared by
// the MPI communicator's collectives, point-to-point waits and communicator creation.
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>
#include <vector>

namespace sy::detail {

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(double seconds);

// Tests the requests until all complete (true) or the deadline passes (false; the requests are
// then left as they were, so the caller can find which ones did not complete).
bool poll(std::vector<MPI_Request>& reqs, Clock::time_point deadline);

// "5.0": timeouts as the messages print them.
std::string seconds(double s);

// "0,1,2,3"; runs of five or more consecutive ranks shrink to "a-b" so big groups stay one line.
std::string rank_list(const std::vector<int>& ranks);

}  // namespace sy::detail
