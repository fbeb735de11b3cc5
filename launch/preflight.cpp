#include "launch/preflight.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/config_error.h"
#include "trainer/run_context.h"

namespace sy {

namespace {
int env_count(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end || x < 0)
    throw ConfigError(std::string(name) + "=\"" + v + "\" is not a non-negative integer; fix the Slurm environment "
                      "(run inside an allocation made by sbatch or salloc)");
  return int(x);
}
}  // namespace

void check_ranks_fit(const Recipe& r, int ranks, const std::string& origin) {
  try {
    check_layout(r, ranks);
  } catch (const ConfigError& e) {
    throw ConfigError(origin + " does not fit the recipe's layout: " + e.what());
  }
}

void check_out_dir_writable(const std::string& out_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    throw ConfigError("train.out_dir=" + out_dir + " cannot be created (" + ec.message() +
                      "); set train.out_dir to a writable path");
  const std::string probe = out_dir + "/.write_probe." + std::to_string(getpid());
  std::ofstream f(probe);
  const bool ok = f && (f << "probe\n") && f.flush();
  const int err = errno;
  f.close();
  fs::remove(probe, ec);
  if (!ok)
    throw ConfigError("train.out_dir=" + out_dir + " is not writable (" + std::strerror(err) +
                      "); set train.out_dir to a writable path or fix its permissions");
}

int allocation_tasks() {
  if (!std::getenv("SLURM_JOB_ID")) return 0;
  const int ntasks = env_count("SLURM_NTASKS");
  const int nnodes = env_count("SLURM_JOB_NUM_NODES");
  if (ntasks < 1)
    throw ConfigError("SLURM_JOB_ID is set but SLURM_NTASKS is missing or 0; request tasks (sbatch --ntasks or "
                      "--ntasks-per-node) or unset SLURM_JOB_ID outside an allocation");
  if (nnodes > 0 && ntasks < nnodes)
    throw ConfigError("SLURM_NTASKS=" + std::to_string(ntasks) + " is below SLURM_JOB_NUM_NODES=" + std::to_string(nnodes) +
                      "; the Slurm environment is inconsistent: request at least one task per node");
  return ntasks;
}

}  // namespace sy
