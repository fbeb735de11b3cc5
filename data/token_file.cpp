#include "data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "data/megatron_index.h"
#include "engine/config_error.h"

namespace sy {

// Tokens are read straight from the map, which is only the on-disk little-endian order on a
// little-endian host; a big-endian port would need byte swaps in at() and copy().
static_assert(std::endian::native == std::endian::little, "token files are little-endian");

namespace {

constexpr const char* kPrepareHint = "create it with `switchyard data prepare`";

void put_u32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_u64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get_u32(const unsigned char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t get_u64(const unsigned char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw ConfigError(path + ": write failed (" + std::strerror(errno) + "); check free disk space");
    p += w;
    n -= size_t(w);
  }
}

}  // namespace

void write_token_file(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab,
                      int bytes_per_token) {
  if (bytes_per_token != 2 && bytes_per_token != 4)
    throw ConfigError(path + ": bytes_per_token=" + std::to_string(bytes_per_token) + " is not supported; use 2 or 4");
  if (vocab == 0) throw ConfigError(path + ": vocab_size must be positive");
  if (bytes_per_token == 2 && vocab > 65536)
    throw ConfigError(path + ": vocab_size=" + std::to_string(vocab) + " does not fit 2 bytes per token; use 4");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= vocab)
      throw ConfigError(path + ": token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                        " >= vocab_size=" + std::to_string(vocab) + "; raise the vocabulary size");

  unsigned char header[kTokenHeaderBytes] = {};
  std::memcpy(header, kTokenMagic, 8);
  put_u32(header + 8, kTokenFileVersion);
  put_u32(header + 12, uint32_t(bytes_per_token));
  put_u64(header + 16, tokens.size());
  put_u32(header + 24, vocab);
  put_u32(header + 28, 0);

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw ConfigError(tmp + ": cannot create (" + std::strerror(errno) + "); choose a writable output path");
  try {
    write_all(fd, header, sizeof header, tmp);
    // Converted in chunks so a large corpus never needs a second full-size copy in memory.
    constexpr size_t kChunk = 1 << 16;
    std::vector<unsigned char> buf(kChunk * size_t(bytes_per_token));
    for (size_t start = 0; start < tokens.size(); start += kChunk) {
      const size_t n = std::min(kChunk, tokens.size() - start);
      for (size_t i = 0; i < n; ++i) {
        const uint32_t t = tokens[start + i];
        if (bytes_per_token == 2) {
          const uint16_t s = uint16_t(t);
          std::memcpy(buf.data() + 2 * i, &s, 2);
        } else {
          std::memcpy(buf.data() + 4 * i, &t, 4);
        }
      }
      write_all(fd, buf.data(), n * size_t(bytes_per_token), tmp);
    }
    if (::fsync(fd) != 0) throw ConfigError(tmp + ": fsync failed (" + std::strerror(errno) + ")");
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw ConfigError(path + ": cannot rename " + tmp + " into place (" + std::strerror(err) + ")");
  }
  // The rename itself is durable only once the directory entry is synced.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void TokenFile::open_megatron(const std::string& idx_path) {
  const MegatronIndex ix = read_megatron_index(idx_path);
  if (ix.tokens == 0) throw ConfigError(ix.bin_path + ": the Megatron dataset holds no tokens; point [data] at a corpus");
  const int fd = ::open(ix.bin_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ConfigError(ix.bin_path + ": cannot open (" + std::strerror(errno) + ")");
  map_bytes_ = size_t(ix.tokens) * size_t(ix.bytes_per_token);
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw ConfigError(ix.bin_path + ": cannot mmap (" + std::strerror(map_err) + ")");
  }
  tokens_ = static_cast<const unsigned char*>(map_);
  n_tokens_ = ix.tokens;
  bpt_ = ix.bytes_per_token;
  vocab_ = 0;  // not recorded by Megatron
  megatron_ = true;
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  if (const std::string idx = megatron_index_path(path); !idx.empty()) {
    open_megatron(idx);
    return;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw ConfigError(path + ": cannot open token file (" + std::strerror(errno) + "); " + kPrepareHint +
                      " or fix the path in the recipe's [data] section");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ConfigError(path + ": not a regular file; point the recipe's [data] section at a token file");
  }
  const size_t bytes = size_t(st.st_size);
  if (bytes < kTokenHeaderBytes) {
    ::close(fd);
    throw ConfigError(path + ": truncated token file (" + std::to_string(bytes) + " bytes, the header alone is " +
                      std::to_string(kTokenHeaderBytes) + "); " + kPrepareHint);
  }
  map_ = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw ConfigError(path + ": cannot mmap (" + std::strerror(map_err) + ")");
  }
  map_bytes_ = bytes;

  const auto* h = static_cast<const unsigned char*>(map_);
  auto fail = [&](const std::string& what) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw ConfigError(path + ": " + what);
  };
  if (std::memcmp(h, kTokenMagic, 8) != 0)
    fail(std::string("not a Switchyard token file (bad magic); ") + kPrepareHint);
  const uint32_t version = get_u32(h + 8);
  if (version != kTokenFileVersion)
    fail("token file version " + std::to_string(version) + " is not supported (expected " +
         std::to_string(kTokenFileVersion) + "); re-create it with `switchyard data prepare`");
  const uint32_t bpt = get_u32(h + 12);
  if (bpt != 2 && bpt != 4)
    fail("bytes_per_token=" + std::to_string(bpt) + " in the header (expected 2 or 4); " + kPrepareHint);
  n_tokens_ = get_u64(h + 16);
  vocab_ = get_u32(h + 24);
  bpt_ = int(bpt);
  if (vocab_ == 0) fail(std::string("vocab_size=0 in the header; ") + kPrepareHint);
  const uint64_t payload = bytes - kTokenHeaderBytes;
  if (n_tokens_ > payload / bpt || payload != n_tokens_ * bpt)
    fail("truncated or oversized token file: the header says " + std::to_string(n_tokens_) + " tokens of " +
         std::to_string(bpt) + " bytes, the file holds " + std::to_string(payload) + " bytes after the header; " +
         kPrepareHint);
  tokens_ = h + kTokenHeaderBytes;
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_bytes_);
}

uint32_t TokenFile::at(uint64_t i) const {
  if (i >= n_tokens_)
    throw std::out_of_range(path_ + ": token " + std::to_string(i) + " past the end (" + std::to_string(n_tokens_) + ")");
  if (bpt_ == 1) return tokens_[i];
  if (bpt_ == 2) {
    uint16_t v;
    std::memcpy(&v, tokens_ + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens_ + 4 * i, 4);
  return v;
}

void TokenFile::copy(uint64_t i, uint64_t n, int32_t* out) const {
  if (i > n_tokens_ || n > n_tokens_ - i)
    throw std::out_of_range(path_ + ": tokens [" + std::to_string(i) + ", " + std::to_string(i + n) +
                            ") past the end (" + std::to_string(n_tokens_) + ")");
  if (bpt_ == 1) {
    for (uint64_t k = 0; k < n; ++k) out[k] = int32_t(tokens_[i + k]);
  } else if (bpt_ == 2) {
    for (uint64_t k = 0; k < n; ++k) {
      uint16_t v;
      std::memcpy(&v, tokens_ + 2 * (i + k), 2);
      out[k] = int32_t(v);
    }
  } else {
    for (uint64_t k = 0; k < n; ++k) {
      uint32_t v;
      std::memcpy(&v, tokens_ + 4 * (i + k), 4);
      out[k] = int32_t(v);
    }
  }
}

void TokenFile::check_vocab(uint32_t model_vocab) const {
  // Token ids first: an out-of-range id is the error that would actually corrupt training, so it
  // is the one worth reporting with its position.
  for (uint64_t i = 0; i < n_tokens_; ++i) {
    const uint32_t t = at(i);
    if (t >= model_vocab)
      throw ConfigError(path_ + ": token id " + std::to_string(t) + " at position " + std::to_string(i) +
                        " >= model.vocab_size=" + std::to_string(model_vocab) +
                        "; set model.vocab_size > " + std::to_string(t) + " or re-create the data with a smaller vocabulary");
  }
  if (vocab_ > model_vocab)  // 0 for a Megatron dataset: nothing recorded beyond the ids
    throw ConfigError(path_ + ": the file's vocab_size=" + std::to_string(vocab_) + " exceeds model.vocab_size=" +
                      std::to_string(model_vocab) + "; set model.vocab_size >= " + std::to_string(vocab_));
}

}  // namespace sy
