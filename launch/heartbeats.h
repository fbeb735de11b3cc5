// The supervisor's side of the ranks' heartbeat files (trainer/heartbeat.h): where each rank
// stands, and which rank to blame when the job stops making progress.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct RankBeat {
  int rank = -1;
  long pid = 0;
  std::string host, phase, op, group;
  int64_t step = 0;
  double op_s = 0;  // how long it had waited in `op` when the file was written
  double time = 0;  // when the file was written (seconds since the epoch)
};

// Every rank_*.json under `dir` that parses, by rank; files being replaced are skipped this time.
std::vector<RankBeat> read_heartbeats(const std::string& dir);

// "rank 1 (pid 42 on n1): step 7, phase step, waiting in all_reduce on group dp for 3.1 s,
// heartbeat 0.4 s old"; "not responding" when the heartbeat is older than `stale_s`.
std::string describe(const RankBeat& b, double now, double stale_s);

// The rank a hang is blamed on: one whose heartbeat went silent (the whole process is stopped or
// frozen), else one not waiting in a collective while others wait, else the one furthest behind.
// -1 when `beats` is empty.
int suspect_of_hang(const std::vector<RankBeat>& beats, double now, double stale_s);

double unix_now();

}  // namespace sy
