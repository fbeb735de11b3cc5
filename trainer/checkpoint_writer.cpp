#include "trainer/checkpoint_writer.h"

namespace sy {

CheckpointWriter::~CheckpointWriter() {
  if (inflight_ && inflight_->thread.joinable()) inflight_->thread.join();
}

void CheckpointWriter::save(StateSnapshot snap, SaveRequest req) {
  finish();
  if (!async_) {
    save_checkpoint(world_, req);
    return;
  }
  auto f = std::make_unique<InFlight>();
  f->snap = std::move(snap);  // the pieces' data pointers move with the buffers' heap blocks
  f->req = std::move(req);
  begin_save(world_, f->req);
  InFlight* raw = f.get();
  const int rank = world_.rank();
  f->thread = std::thread([raw, rank] {
    raw->written = write_shard(rank, raw->req);
    raw->done = true;
  });
  inflight_ = std::move(f);
}

void CheckpointWriter::finish() {
  if (!inflight_) return;
  inflight_->thread.join();
  std::unique_ptr<InFlight> f = std::move(inflight_);
  finish_save(world_, f->req, f->written);
}

}  // namespace sy
