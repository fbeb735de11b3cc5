// Megatron-LM's indexed datasets (`<prefix>.idx` + `<prefix>.bin`, as written by its
// tools/preprocess_data.py through megatron/core/datasets/indexed_dataset.py), read beside our
// own token files so that users bring the corpora they have already tokenized. The .idx layout
// (little-endian), documented in data/README.md:
//   9 bytes  magic "MMIDIDX\0\0"
//   uint64   version (1)
//   uint8    dtype code: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
//   uint64   sequence count S
//   uint64   document count D (document boundaries: D = documents + 1)
//   int32[S] sequence lengths (tokens)
//   int64[S] sequence pointers (byte offsets into .bin)
//   int64[D] document indices (the first sequence of each document, then S)
//   [int8[S] sequence modes, multimodal datasets only: not read]
// The .bin holds the sequences' tokens back to back.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

struct MegatronIndex {
  std::string bin_path;
  int bytes_per_token = 0;  // 1 (uint8), 2 (uint16) or 4 (int32): the token types a corpus uses
  uint64_t sequences = 0, documents = 0;
  uint64_t tokens = 0;      // the sum of the sequence lengths
};

// `path` names a Megatron dataset when it is `<prefix>.idx`, `<prefix>.bin` with a `<prefix>.idx`
// beside it, or a bare `<prefix>` with both files; returns the .idx path then, else "".
std::string megatron_index_path(const std::string& path);

// Reads and checks the index against its .bin: the magic, version, a token dtype, counts that
// fit the file, sequences stored back to back from byte 0 (so the .bin is one token stream), and
// the .bin's size. ConfigError naming the file, the field and the fix.
MegatronIndex read_megatron_index(const std::string& idx_path);

}  // namespace sy
