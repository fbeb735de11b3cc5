// Hugging Face's safetensors files, read and written without a dependency: an 8-byte little-endian
// header length N, N bytes of JSON ({name: {"dtype", "shape", "data_offsets": [begin, end]}, plus
// an optional "__metadata__" object of strings}), then the tensors' bytes back to back, offsets
// relative to the end of the header. Dtypes: F32, F64, BF16 (read and written as they are) and
// I32. A released model's shards are every *.safetensors file of its directory.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/weights_io.h"

namespace sy {

// Every tensor of one file; std::runtime_error naming the file and the problem (a truncated
// header, an unknown dtype, offsets outside the file or overlapping).
std::map<std::string, HostArray> read_safetensors(const std::string& path);
// Every tensor of every *.safetensors file in `dir` (a name in two files is an error).
std::map<std::string, HostArray> read_safetensors_dir(const std::string& dir);
// Writes `arrays` in the given order, with string metadata; the header is padded with spaces to
// a multiple of 8 bytes so that the data starts aligned.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, HostArray>>& arrays,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sy
