// Each rank's heartbeat for the hang watchdog of `switchyard run`: a small JSON file,
// <out_dir>/heartbeat/rank_%05d.json, rewritten (atomically) twice a second by a thread:
//   {"rank":1,"pid":4242,"host":"n1","step":7,"phase":"step","op":"all_reduce","group":"dp",
//    "op_s":0.8,"time":1718000000.25}
// step: steps completed; phase: what the training thread is doing (starting, step, checkpoint,
// evaluate, finished); op/group: the collective it waits in ("" when none) and for how long.
// A rank whose file stops changing is stopped or frozen as a whole; a rank whose file says it has
// waited in a collective for long is blocked by another one (launch/rank_status.h reads them).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/comm.h"

namespace sy {

class Heartbeat final : public CommObserver {
 public:
  // Creates `dir` and starts the writer thread.
  Heartbeat(const std::string& dir, int rank);
  ~Heartbeat() override;  // writes the last state and stops the thread
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  void set_step(int64_t steps_done);
  void set_phase(const char* phase);  // a string literal
  void enter(const char* op, const std::string& group) override;
  void leave() override;

 private:
  void write_file();
  std::string path_, tmp_, host_;
  int rank_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int64_t step_ = 0;
  const char* phase_ = "starting";
  const char* op_ = "";
  std::string group_;
  double op_since_ = 0;
  std::thread thread_;
};

}  // namespace sy
