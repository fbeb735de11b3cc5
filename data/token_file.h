// Token files: a 32-byte little-endian header followed by the tokens, so a corpus is one mmap and
// no parsing. Header: magic "SYTOKENS" (8 bytes), uint32 version (1), uint32 bytes_per_token (2 or 4),
// uint64 n_tokens, uint32 vocab_size, uint32 reserved (0). Tokens are uint16 or uint32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace sy {

inline constexpr char kTokenMagic[8] = {'S', 'Y', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenHeaderBytes = 32;

// Writes path.tmp, fsyncs it and renames it over path, so a reader never sees a half-written file.
// Throws ConfigError if a token is >= vocab or does not fit bytes_per_token (2 or 4).
void write_token_file(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab,
                      int bytes_per_token);

// A read-only memory map of a token file; the header is checked on open (ConfigError naming the
// file and the fix). `path` may also name a Megatron-LM indexed dataset (data/megatron_index.h):
// its .bin is mapped as one token stream (its documents in order), of 1, 2 or 4 bytes per token,
// with no vocabulary size recorded (vocab() is 0; check_vocab still checks every id).
class TokenFile {
 public:
  explicit TokenFile(const std::string& path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return n_tokens_; }
  uint32_t vocab() const { return vocab_; }
  bool megatron() const { return megatron_; }
  int bytes_per_token() const { return bpt_; }
  uint32_t at(uint64_t i) const;
  // Tokens [i, i + n) as int32 (the model's index type); throws std::out_of_range past the end.
  void copy(uint64_t i, uint64_t n, int32_t* out) const;
  // One pass over the file: every token id must be < model_vocab, and so must the header's vocab.
  void check_vocab(uint32_t model_vocab) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
  uint64_t n_tokens_ = 0;
  uint32_t vocab_ = 0;
  int bpt_ = 0;
  bool megatron_ = false;
  void open_megatron(const std::string& idx_path);
};

}  // namespace sy
