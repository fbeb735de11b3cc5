// Faults the tests inject into a training process, each read from its own environment variable
// and only for that purpose (docs/launch.md lists them):
//   SY_FAULT_STALL_RANK / SY_FAULT_STALL_STEP   that rank stops itself (SIGSTOP) at that step
//   SY_FAULT_NAN_STEP [/ _STEPS / _RANK]        the data windows of steps S .. S+STEPS-1 (as an
//                                               uninterrupted run numbers them) give that rank
//                                               (default 0) NaN gradients and a NaN loss
//   SY_TEST_STEP_DELAY_MS                       every step sleeps this long (time-limit tests)
// Under `switchyard run` (which sets SY_RUN_ATTEMPT) the stall and NaN faults fire only in the
// first SY_FAULT_ATTEMPTS attempts (default 1), so a restarted job can get past them.
#pragma once

#include <cstdint>

namespace sy {

void maybe_stall_for_test(int rank, int64_t step);
// True when this rank's micro-batches of data window `window` (0-based) are to turn NaN.
bool nan_fault_for_test(int rank, int64_t window);
void maybe_delay_step_for_test();

}  // namespace sy
