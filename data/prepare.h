// Builds token files from text: byte-level tokens (vocab 256, stored as uint16), split into a
// training and a validation file by whole records so that no record straddles the two.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

struct PrepareStats {
  int64_t files = 0;
  int64_t train_records = 0, val_records = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  std::string train_path, val_path;
};

// Records are separated by lines holding only "%" (the fortune format); a file without such a
// line is split at blank lines instead. Every val_every-th record (the 20th, 40th, ... counting
// across all files in order) goes to validation. Writes <out_prefix>.train.tok and
// <out_prefix>.val.tok and prints their sizes.
PrepareStats prepare_text_files(const std::vector<std::string>& inputs, const std::string& out_prefix,
                                int64_t val_every = 20);

// The fortune files in `dir` (every regular file except *.dat and *.u8, sorted by name; symlinks
// skipped), through prepare_text_files with val_every = 20.
PrepareStats prepare_fortunes(const std::string& out_prefix, const std::string& dir = kFortunesDir);

}  // namespace sy
