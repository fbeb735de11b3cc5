#include "parallel/mpi_wait.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "parallel/mpi_check.h"

namespace sy::detail {

namespace {
constexpr int kSpins = 64;
constexpr auto kYieldFor = std::chrono::milliseconds(2);
}  // namespace

std::string seconds(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", s);
  return b;
}

std::string rank_list(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!s.empty()) s += ",";
    if (j - i >= 4) {
      s += std::to_string(v[i]) + "-" + std::to_string(v[j]);
      i = j + 1;
    } else {
      s += std::to_string(v[i++]);
    }
  }
  return s;
}

Clock::time_point deadline_after(double s) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::min(s, 1e9)));
}

// Non-blocking collectives only progress inside MPI calls, so the wait keeps testing: first
// spinning (short operations finish here), then yielding (an oversubscribed peer gets the core,
// an idle machine costs nothing), and after kYieldFor sleeping between tests so that a rank
// waiting seconds for a slow peer does not burn a core.
bool poll(std::vector<MPI_Request>& reqs, Clock::time_point deadline) {
  const auto start = Clock::now();
  for (int i = 0;; ++i) {
    int done = 0;
    SY_MPI_CHECK(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE));
    if (done) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    if (i < kSpins) continue;
    if (now - start < kYieldFor) {
      sched_yield();
    } else {
      timespec ts{0, 50'000};
      nanosleep(&ts, nullptr);
    }
  }
}

}  // namespace sy::detail
