// Fault-tolerant checkpoints: one HDF5 shard file per rank plus a manifest, committed atomically
// by rank 0 (docs/checkpoint-format.md has the layout, the commit protocol and why).
//
// A tensor is identified by its name and GLOBAL shape. Each rank contributes pieces: contiguous
// ranges [offset, offset + count) of the tensor's row-major flattening, so a ZeRO shard cutting
// across a parameter, an expert owned by one EP rank and a full replica are all just pieces, and
// the file does not depend on the layout that wrote it. A replicated tensor is passed by one rank
// only (the caller picks, e.g. DP rank 0).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "parallel/comm.h"

namespace sy {

// A save or load that failed; the message is one line naming the rank and the cause.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TensorPiece {
  std::string name;    // unique per tensor; no '/' or '@' (they would make HDF5 groups / clash)
  Shape global_shape;  // the whole tensor's shape; every piece of a tensor must agree
  DType dtype = DType::F32;
  int64_t offset = 0;  // first element of the flattened global tensor this piece holds
  int64_t count = 0;   // elements; data points at count * dtype_size(dtype) bytes, host memory
  const void* data = nullptr;
};

struct SaveRequest {
  std::string out_dir;  // the checkpoint goes to <out_dir>/checkpoints/step_%08d/
  int64_t step = 0;
  std::vector<TensorPiece> pieces;             // this rank's pieces
  std::map<std::string, std::string> attrs;    // recipe, layout, RNG states...: rank 0's are stored
  int keep = 3;                                // committed checkpoints kept (0 or less: keep all)
};

// Collective over `world`: every rank calls it with its own pieces. Writes step_X.tmp/, fsyncs,
// agrees on success, and rank 0 writes the manifest, renames to step_X/, replaces `latest` and
// prunes to `keep`. A failure on any rank throws CheckpointError on every rank, with nothing
// committed and the previous checkpoint and `latest` untouched.
void save_checkpoint(Communicator& world, const SaveRequest& req);


// Removes stale step_*.tmp directories (left by a crash mid-save) under <out_dir>/checkpoints:
// rank 0 only, between two barriers, so no rank is writing into one while it goes. Collective.
void remove_stale_tmp(Communicator& world, const std::string& out_dir);

// The <out_dir>/checkpoints directory and the step directory name for a step.
std::string checkpoints_dir(const std::string& out_dir);
std::string step_dir_name(int64_t step);

struct PieceRecord {
  std::string file;     // rank_%05d.h5, relative to the step directory
  std::string dataset;  // the dataset's name at the file's root
  int64_t offset = 0;
  int64_t count = 0;
  uint32_t crc32c = 0;  // of the count elements' little-endian bytes
};

// save_checkpoint in its three phases, for saving in the background (checkpoint.async): begin
// and finish are collective and run on the training thread; write_shard is this rank's own file
// I/O and may run on another thread while training goes on (the pieces must stay valid and
// unchanged until it returns). save_checkpoint = begin_save; write_shard; finish_save.
struct ShardWrite {
  std::vector<PieceRecord> records;
  std::string error;  // empty: written and fsynced
};
void begin_save(Communicator& world, const SaveRequest& req);
ShardWrite write_shard(int rank, const SaveRequest& req);
void finish_save(Communicator& world, const SaveRequest& req, const ShardWrite& written);

struct TensorRecord {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<PieceRecord> pieces;  // sorted by offset
};

struct Manifest {
  int64_t format_version = 1;
  int64_t step = 0;
  int64_t world_size = 1;
  std::map<std::string, std::string> attrs;
  std::vector<std::string> files;     // every rank file, one per rank that wrote
  std::vector<TensorRecord> tensors;  // sorted by name
  std::string to_json() const;
  static Manifest from_json(const std::string& text);  // std::runtime_error if malformed
};

class CheckpointReader {
 public:
  // Parses <step_dir>/manifest.json; ConfigError if it is missing or malformed.
  explicit CheckpointReader(const std::string& step_dir);

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return m_; }
  int64_t step() const { return m_.step; }
  const std::map<std::string, std::string>& attrs() const { return m_.attrs; }
  std::vector<std::string> names() const;
  bool has(const std::string& name) const;
  Shape shape(const std::string& name) const;  // ConfigError for an unknown name
  DType dtype(const std::string& name) const;

  // Elements [offset, offset + count) of the flattened tensor into `out` as `want` (f32 <-> f64
  // convert; i32 only as i32), from whatever pieces cover them, checking the CRC32C of every
  // piece it touches. CheckpointError naming the tensor and file on damage or a gap.
  void read(const std::string& name, int64_t offset, int64_t count, void* out, DType want) const;

  // Every piece's CRC32C and the completeness audit (per tensor: pieces neither overlap nor leave
  // gaps and add up to the global element count; every rank file present). Problems, one line
  // each naming the tensor or file; empty when the checkpoint is sound.
  std::vector<std::string> verify() const;

 private:
  const TensorRecord& tensor(const std::string& name) const;
  std::string dir_;
  Manifest m_;
};

// The newest checkpoint under <out_dir>/checkpoints that verifies: the one `latest` names first,
// then the other committed ones from newest to oldest, with a warning line on stderr for each
// that fails. "" if there is none.
std::string find_resume_checkpoint(const std::string& out_dir);

}  // namespace sy
