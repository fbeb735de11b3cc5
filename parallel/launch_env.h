// Where this process sits in the job: rank, world size and local rank, read from Open MPI's
// (OMPI_COMM_WORLD_*) or Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) environment, so the
// choice between the MPI and the single-process communicator is made before MPI is touched.
#pragma once

namespace sy {

struct LaunchEnv {
  int rank = 0, world = 1, local_rank = 0;
  int local_size = 1;  // ranks on this node (0 when the launcher does not say)
  const char* source = "single process";  // which variables it came from
};

// Throws ConfigError on inconsistent variables (e.g. a rank >= the world size).
LaunchEnv read_launch_env();

}  // namespace sy
