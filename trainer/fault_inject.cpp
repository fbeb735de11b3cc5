#include "trainer/fault_inject.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>

namespace sy {

namespace {
int64_t env_or(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : dflt;
}
bool attempt_allows_faults() {
  return env_or("SY_RUN_ATTEMPT", 0) < env_or("SY_FAULT_ATTEMPTS", 1);
}
}  // namespace

void maybe_stall_for_test(int rank, int64_t step) {
  static const int64_t r = env_or("SY_FAULT_STALL_RANK", -1), s = env_or("SY_FAULT_STALL_STEP", -1);
  if (r == rank && s == step && attempt_allows_faults()) std::raise(SIGSTOP);
}

bool nan_fault_for_test(int rank, int64_t window) {
  static const int64_t first = env_or("SY_FAULT_NAN_STEP", 0) - 1, n = env_or("SY_FAULT_NAN_STEPS", 1),
                       r = env_or("SY_FAULT_NAN_RANK", 0);
  return first >= 0 && rank == r && window >= first && window < first + n && attempt_allows_faults();
}

void maybe_delay_step_for_test() {
  static const int64_t ms = env_or("SY_TEST_STEP_DELAY_MS", 0);
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

}  // namespace sy
