// The HDF5 side of a checkpoint: one rank's shard file and the pieces in it. Internal to
// checkpoint/ (checkpoint.h is the interface).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace sy {

// The dataset name of a piece: the tensor's name when the piece is the whole tensor (stored in
// its global shape, so h5py reads a replicated parameter directly), else "<name>@<offset>"
// (stored 1-D, `count` elements).
std::string piece_dataset_name(const TensorPiece& p);

// Writes every piece into a new file at `path`, closes it and fsyncs it. Fills one record per
// piece (file = `file_name`). `before_piece(i)` runs before piece i is written, and once with
// i == pieces.size() before the file is closed (fault injection).
// Throws std::runtime_error naming the path on any failure.
std::vector<PieceRecord> write_shard_file(const std::string& path, const std::string& file_name,
                                          const std::vector<TensorPiece>& pieces,
                                          const std::function<void(size_t)>& before_piece);

// The whole dataset as `count` elements of `dtype` (its stored type must be that dtype and hold
// exactly that many elements). Throws std::runtime_error on any problem.
std::vector<std::byte> read_piece_bytes(const std::string& path, const std::string& dataset, DType dtype,
                                        int64_t count);

// fsync of a file or (O_DIRECTORY) a directory; std::runtime_error naming the path on failure.
void fsync_file(const std::string& path);
void fsync_dir(const std::string& path);

// The completeness audit of one manifest: per tensor, pieces inside the tensor, neither
// overlapping nor leaving gaps, adding up to its element count, each in a listed file. One line
// per problem, naming the tensor.
std::vector<std::string> audit_manifest(const Manifest& m);

// The DType of a manifest dtype name ("float32", "float64", "int32"); std::runtime_error if none.
DType dtype_from_name(const std::string& s);

}  // namespace sy
