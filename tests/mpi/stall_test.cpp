// Run with mpirun -np 3 (tests/mpi/expect_stall.sh): rank 2 stops itself with SIGSTOP just before
// an all_reduce, as a hung or descheduled node would. Ranks 0 and 1 must not hang: their
// all_reduce fails after the 3 s timeout with a CommTimeout naming the operation, the group and
// world rank 2. Each survivor prints "rank R: <message>" and exits non-zero, which makes mpirun
// end the job, the stopped rank included.
//
// Argument: a directory where each rank writes its pid, so the wrapper can kill a leftover
// stopped process by id.
#include <csignal>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include "parallel/comm_mpi.h"

int main(int argc, char** argv) {
  using Clock = std::chrono::steady_clock;
  auto world = sy::make_mpi_world_comm(3.0);
  const int rank = world->rank();
  if (world->size() != 3) {
    std::fprintf(stderr, "rank %d: run with exactly 3 ranks\n", rank);
    return 2;
  }
  if (argc > 1) std::ofstream(std::string(argv[1]) + "/rank" + std::to_string(rank) + ".pid") << getpid() << "\n";
  // A subgroup over everyone, so the message has to carry a group's own name, not just "world".
  auto dp = world->subgroup({0, 1, 2}, "dp");
  // One operation that succeeds first: the stall is mid-job, not at start-up.
  double x = rank;
  dp->all_reduce(&x, 1, sy::CommType::F64, sy::ReduceOp::Sum);
  if (x != 3.0) {
    std::fprintf(stderr, "rank %d: warm-up all_reduce gave %g, expected 3\n", rank, x);
    return 2;
  }

  // The survivors meet once more after their timeouts, so that neither exits (and has mpirun end
  // the job) before the other has printed its message.
  std::unique_ptr<sy::Communicator> survivors;
  if (rank < 2) survivors = world->subgroup({0, 1}, "survivors");

  if (rank == 2) raise(SIGSTOP);
  const auto t0 = Clock::now();
  try {
    dp->all_reduce(&x, 1, sy::CommType::F64, sy::ReduceOp::Sum);
  } catch (const sy::CommTimeout& e) {
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("rank %d: %s\n", rank, e.what());
    std::printf("rank %d: timed out after %.2f s of waiting\n", rank, s);
    std::fflush(stdout);
    try {
      survivors->barrier();
    } catch (const std::exception& e2) {
      std::printf("rank %d: survivors barrier: %s\n", rank, e2.what());
    }
    return 1;  // without MPI_Finalize: it would wait for rank 2
  }
  std::printf("rank %d: all_reduce completed although rank 2 was stopped\n", rank);
  std::fflush(stdout);
  dp.reset();
  world.reset();
  sy::mpi_finalize_if_initialised();
  return 0;
}
