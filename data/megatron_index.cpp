#include "data/megatron_index.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "engine/config_error.h"

namespace sy {

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

template <class T> T get(const std::vector<char>& b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

}  // namespace

std::string megatron_index_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (ends_with(path, ".idx")) return path;
  if (ends_with(path, ".bin")) {
    const std::string idx = path.substr(0, path.size() - 4) + ".idx";
    return fs::exists(idx, ec) ? idx : "";
  }
  if (!fs::exists(path, ec) && fs::exists(path + ".idx", ec) && fs::exists(path + ".bin", ec)) return path + ".idx";
  return "";
}

MegatronIndex read_megatron_index(const std::string& idx_path) {
  const std::string hint = "; write it with Megatron-LM's tools/preprocess_data.py (--dataset-impl mmap)";
  std::ifstream in(idx_path, std::ios::binary);
  if (!in) throw ConfigError(idx_path + ": cannot open the Megatron index; fix the path in the recipe's [data] section");
  const std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto fail = [&](const std::string& what) { throw ConfigError(idx_path + ": " + what + hint); };
  if (b.size() < kHeaderBytes || std::memcmp(b.data(), kMagic, 9) != 0)
    fail("not a Megatron index (no MMIDIDX header)");
  const uint64_t version = get<uint64_t>(b, 9);
  if (version != 1) fail("index version " + std::to_string(version) + " is not supported (expected 1)");
  const uint8_t code = uint8_t(b[17]);
  MegatronIndex ix;
  switch (code) {
    case 1: ix.bytes_per_token = 1; break;
    case 8: ix.bytes_per_token = 2; break;
    case 4: ix.bytes_per_token = 4; break;
    default:
      fail("token dtype code " + std::to_string(code) +
           " is not a token type this reader takes (1 uint8, 8 uint16, 4 int32)");
  }
  ix.sequences = get<uint64_t>(b, 18);
  ix.documents = get<uint64_t>(b, 26);
  const uint64_t s = ix.sequences, d = ix.documents;
  const uint64_t room = (b.size() - kHeaderBytes) / 8;  // bounds the counts before any product
  if (s > room || d > room || kHeaderBytes + 4 * s + 8 * s + 8 * d > b.size())
    fail("truncated: the header counts " + std::to_string(s) + " sequences and " + std::to_string(d) +
         " document boundaries, more than the file's " + std::to_string(b.size()) + " bytes hold");
  const size_t lengths = kHeaderBytes, pointers = lengths + 4 * s, docs = pointers + 8 * s;
  uint64_t at = 0;
  for (uint64_t i = 0; i < s; ++i) {
    const int32_t len = get<int32_t>(b, lengths + 4 * i);
    const int64_t ptr = get<int64_t>(b, pointers + 8 * i);
    if (len < 0) fail("sequence " + std::to_string(i) + " has length " + std::to_string(len));
    if (uint64_t(ptr) != at * uint64_t(ix.bytes_per_token))
      fail("sequence " + std::to_string(i) + " starts at byte " + std::to_string(ptr) + ", not " +
           std::to_string(at * uint64_t(ix.bytes_per_token)) +
           " right after the one before (only back-to-back sequences are read)");
    at += uint64_t(len);
  }
  ix.tokens = at;
  int64_t prev = -1;
  for (uint64_t i = 0; i < d; ++i) {
    const int64_t first = get<int64_t>(b, docs + 8 * i);
    if (first < prev || first > int64_t(s))
      fail("document index " + std::to_string(i) + " is " + std::to_string(first) + " (out of order or past the " +
           std::to_string(s) + " sequences)");
    prev = first;
  }
  ix.bin_path = idx_path.substr(0, idx_path.size() - 4) + ".bin";
  std::error_code ec;
  const auto bin_bytes = std::filesystem::file_size(ix.bin_path, ec);
  if (ec) throw ConfigError(ix.bin_path + ": cannot read the Megatron data file beside " + idx_path + " (" + ec.message() + ")");
  if (bin_bytes != ix.tokens * uint64_t(ix.bytes_per_token))
    throw ConfigError(ix.bin_path + ": " + std::to_string(bin_bytes) + " bytes, but " + idx_path + " describes " +
                      std::to_string(ix.tokens) + " tokens of " + std::to_string(ix.bytes_per_token) +
                      " bytes; the two files do not belong together" + hint);
  return ix;
}

}  // namespace sy
