// Saves checkpoints, in the foreground or in the background (checkpoint.async). In the
// background: the state is copied to host memory at the step boundary (the snapshot, which the
// training that goes on never touches), this rank's shard file is written by a thread, and the
// collective commit runs on the training thread once every rank's write is done (agreed at step
// boundaries), before the next save, and before exit. At most one save is in flight.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "parallel/comm.h"
#include "trainer/train_state.h"

namespace sy {

class CheckpointWriter {
 public:
  CheckpointWriter(Communicator& world, bool async) : world_(world), async_(async) {}
  ~CheckpointWriter();  // waits for a write in flight (nothing is committed then)
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Collective. Commits the save in flight first, then saves `req` (whose pieces point into
  // `snap`): at once, or by starting the background write.
  void save(StateSnapshot snap, SaveRequest req);
  bool in_flight() const { return inflight_ != nullptr; }
  // This rank's vote at a step boundary: 1 while its write is still running.
  int32_t busy() const { return inflight_ && !inflight_->done.load() ? 1 : 0; }
  // Collective: waits for this rank's write and commits the save in flight (no-op if none).
  // Throws CheckpointError on every rank if any rank failed.
  void finish();

 private:
  struct InFlight {
    StateSnapshot snap;
    SaveRequest req;
    ShardWrite written;
    std::atomic<bool> done{false};
    std::thread thread;
  };
  Communicator& world_;
  bool async_;
  std::unique_ptr<InFlight> inflight_;
};

}  // namespace sy
