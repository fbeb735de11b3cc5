#include "parallel/launch_env.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "engine/config_error.h"

namespace sy {

namespace {
// -1 when unset; ConfigError when set to something that is not a non-negative integer.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end || x < 0)
    throw ConfigError(std::string(name) + "=\"" + v + "\" is not a non-negative integer; fix the launch environment");
  return int(x);
}

LaunchEnv from(const char* rank_var, const char* world_var, const char* local_var, const char* local_size_var,
               const char* source) {
  LaunchEnv e;
  e.local_size = std::max(0, env_int(local_size_var));
  e.rank = env_int(rank_var);
  e.world = env_int(world_var);
  e.local_rank = std::max(0, env_int(local_var));
  e.source = source;
  if (e.world < 1)
    throw ConfigError(std::string(world_var) + " is missing or 0 while " + rank_var + " is set; launch with mpirun or srun");
  if (e.rank < 0 || e.rank >= e.world)
    throw ConfigError(std::string(rank_var) + "=" + std::to_string(e.rank) + " is not below " + world_var + "=" +
                      std::to_string(e.world) + "; fix the launch environment");
  if (e.local_size > 0 && e.local_rank >= e.local_size)
    throw ConfigError(std::string(local_var) + "=" + std::to_string(e.local_rank) + " is not below " + local_size_var + "=" +
                      std::to_string(e.local_size) + "; fix the launch environment");
  if (e.local_size > e.world)
    throw ConfigError(std::string(local_size_var) + "=" + std::to_string(e.local_size) + " exceeds " + world_var + "=" +
                      std::to_string(e.world) + "; fix the launch environment");
  return e;
}
}  // namespace

LaunchEnv read_launch_env() {
  if (env_int("OMPI_COMM_WORLD_RANK") >= 0)
    return from("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE", "Open MPI");
  // Under srun (with --mpi=pmix, Open MPI's variables are absent). SLURM_NTASKS >= 1, so that a
  // rank number that does not fit a one-task step is an error rather than a quiet single run.
  if (env_int("SLURM_PROCID") >= 0 && env_int("SLURM_NTASKS") >= 1)
    return from("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "Slurm");
  return LaunchEnv{};
}

}  // namespace sy
