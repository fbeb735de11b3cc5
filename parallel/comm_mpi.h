// The MPI communicator (Open MPI, host memory). MPI stays out of this header: callers see only
// the Communicator interface, so code above parallel/ does not depend on mpi.h.
#pragma once

#include <memory>

#include "parallel/comm.h"

namespace sy {

// The communicator over every launched rank, named "world". Initialises MPI if nobody has
// (MPI_THREAD_SERIALIZED: operations may come from any one thread at a time). Collective over
// all ranks; every operation on it and its subgroups fails after timeout_s with CommTimeout.
std::unique_ptr<Communicator> make_mpi_world_comm(double timeout_s);

// Finalizes MPI after the communicators are destroyed. Does nothing when MPI was never
// initialised or is already finalized, and nothing after a timeout: finalizing would wait for the
// rank that never arrived, so a process that timed out should just exit non-zero (the launcher
// then ends the others).
void mpi_finalize_if_initialised();

// True once an operation in this process timed out leaving MPI work pending (a collective or a
// send; a timed-out receive is withdrawn cleanly and does not count).
bool mpi_timed_out();

}  // namespace sy
