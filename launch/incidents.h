// What the supervisor records about each failure: one JSON object per line in
// <out_dir>/incidents.jsonl and one readable line on stdout.
//   {"time":"2025-06-01T12:00:00Z","rank":1,"cause":"killed by signal 9 (SIGKILL)","step_reached":7,
//    "resume_step":5,"steps_lost":2,"restart":1,"ranks":["rank 0 (pid ...): step 7, ..."]}
// restart: the restart this incident leads to (0: none, the supervisor gave up).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct Incident {
  double time = 0;  // seconds since the epoch
  int rank = -1;    // -1: not known
  std::string cause;
  int64_t step_reached = 0;  // the furthest step any rank had finished
  int64_t resume_step = 0;   // the step of the checkpoint the restart resumes from (0: from scratch)
  int64_t restart = 0;
  std::vector<std::string> ranks;  // where every rank stood (hangs)
  int64_t steps_lost() const { return step_reached > resume_step ? step_reached - resume_step : 0; }
};

std::string to_json_line(const Incident& i);
// Appends one line; std::runtime_error naming the file when it cannot.
void append_incident(const std::string& path, const Incident& i);
// "rank 1 killed by signal 9 (SIGKILL) at step 7 (resuming from step 5: 2 steps lost)"
std::string readable(const Incident& i);

}  // namespace sy
