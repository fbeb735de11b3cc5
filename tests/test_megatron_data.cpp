// Megatron-LM indexed datasets (data/megatron_index.h) as training data: the .idx/.bin pair is
// written here byte by byte from the documented layout (not by our reader's code), read back as
// one token stream by each of its three names, its damage reported in one line, and a run on it
// trains exactly as on the same tokens in our own format.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "engine/config_error.h"
#include "run_harness.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

template <class T> void put(std::string& b, T v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); }

// Documents of `bytes`-byte tokens, one sequence per document, as Megatron's builder writes them.
// `mutate` edits the index bytes before they are written.
void write_megatron(const std::string& prefix, const std::vector<std::vector<uint32_t>>& docs, int bytes, uint8_t code,
                    const std::function<void(std::string&)>& mutate = {}) {
  std::string bin, idx("MMIDIDX\0\0", 9);
  std::vector<int32_t> lengths;
  std::vector<int64_t> pointers;
  for (const auto& d : docs) {
    pointers.push_back(int64_t(bin.size()));
    lengths.push_back(int32_t(d.size()));
    for (uint32_t t : d) bin.append(reinterpret_cast<const char*>(&t), size_t(bytes));  // little-endian host
  }
  put<uint64_t>(idx, 1);
  put<uint8_t>(idx, code);
  put<uint64_t>(idx, docs.size());
  put<uint64_t>(idx, docs.size() + 1);
  for (int32_t l : lengths) put(idx, l);
  for (int64_t p : pointers) put(idx, p);
  for (size_t i = 0; i <= docs.size(); ++i) put<int64_t>(idx, int64_t(i));
  if (mutate) mutate(idx);
  std::ofstream(prefix + ".bin", std::ios::binary) << bin;
  std::ofstream(prefix + ".idx", std::ios::binary) << idx;
}

class MegatronData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sy_megatron_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  static std::string error_of(const std::string& path) {
    try {
      TokenFile f(path);
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
      return e.what();
    }
    return "(no error)";
  }
  fs::path dir_;
};

const std::vector<std::vector<uint32_t>> kDocs = {{5, 6, 7}, {}, {300, 1, 65535, 2}, {9}};

TEST_F(MegatronData, ReadsTheDocumentsAsOneStreamByPrefixBinOrIdx) {
  write_megatron(p("c16"), kDocs, 2, 8);
  const std::vector<int32_t> want = {5, 6, 7, 300, 1, 65535, 2, 9};
  for (const std::string name : {"c16", "c16.bin", "c16.idx"}) {
    TokenFile f(p(name));
    EXPECT_TRUE(f.megatron()) << name;
    EXPECT_EQ(f.size(), want.size()) << name;
    EXPECT_EQ(f.bytes_per_token(), 2);
    EXPECT_EQ(f.vocab(), 0u);
    std::vector<int32_t> got(want.size());
    f.copy(0, got.size(), got.data());
    EXPECT_EQ(got, want) << name;
    EXPECT_EQ(f.at(5), 65535u);
  }
  // uint8 and int32 corpora.
  write_megatron(p("c8"), {{1, 2}, {255}}, 1, 1);
  TokenFile f8(p("c8"));
  EXPECT_EQ(f8.size(), 3u);
  EXPECT_EQ(f8.at(2), 255u);
  write_megatron(p("c32"), {{100000, 3}}, 4, 4);
  TokenFile f32(p("c32"));
  EXPECT_EQ(f32.at(0), 100000u);
  EXPECT_EQ(f32.bytes_per_token(), 4);
  // The vocabulary check reads every id: 65535 is past a 256-token model.
  try {
    TokenFile f(p("c16"));
    f.check_vocab(256);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 300 at position 3 >= model.vocab_size=256"), std::string::npos) << e.what();
  }
}

TEST_F(MegatronData, DamageIsOneLineNamingTheFileAndField) {
  write_megatron(p("magic"), kDocs, 2, 8, [](std::string& b) { b[0] = 'X'; });
  EXPECT_NE(error_of(p("magic.idx")).find("magic.idx: not a Megatron index (no MMIDIDX header)"), std::string::npos);
  write_megatron(p("ver"), kDocs, 2, 8, [](std::string& b) { b[9] = 2; });
  EXPECT_NE(error_of(p("ver")).find("index version 2 is not supported (expected 1)"), std::string::npos);
  write_megatron(p("f32"), kDocs, 2, 7);
  EXPECT_NE(error_of(p("f32")).find("token dtype code 7 is not a token type"), std::string::npos);
  write_megatron(p("trunc"), kDocs, 2, 8, [](std::string& b) { b.resize(b.size() - 9); });
  EXPECT_NE(error_of(p("trunc")).find("truncated: the header counts 4 sequences"), std::string::npos) << error_of(p("trunc"));
  write_megatron(p("gap"), kDocs, 2, 8, [](std::string& b) { b[9 + 8 + 1 + 8 + 8 + 16 + 8 * 2] = 8; });
  EXPECT_NE(error_of(p("gap")).find("sequence 2 starts at byte 8, not 6"), std::string::npos) << error_of(p("gap"));
  write_megatron(p("short"), kDocs, 2, 8);
  fs::resize_file(p("short.bin"), 10);
  EXPECT_NE(error_of(p("short")).find("short.bin: 10 bytes, but"), std::string::npos) << error_of(p("short"));
  EXPECT_NE(error_of(p("short")).find("describes 8 tokens of 2 bytes"), std::string::npos);
}

// `switchyard train` on a Megatron corpus: every loss equal to the same tokens in a .tok file.
TEST(MegatronTraining, TrainsExactlyAsOnTheSameTokensInOurFormat) {
  testing::RunDir d("megatron_train");
  TokenFile tok((d.path() / "train.tok").string());
  std::vector<int32_t> all(tok.size());
  tok.copy(0, all.size(), all.data());
  std::vector<std::vector<uint32_t>> docs(1);
  for (size_t i = 0; i < all.size(); ++i) {  // documents of 1000 tokens
    docs.back().push_back(uint32_t(all[i]));
    if (docs.back().size() == 1000) docs.emplace_back();
  }
  write_megatron((d.path() / "corpus_text_document").string(), docs, 2, 8);
  const std::string sets = " --set train.steps=4";
  ASSERT_EQ(d.train("tok", 0, sets).code, 0);
  const auto r = d.train("megatron", 0, sets + " --set data.train=corpus_text_document");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(d.field("megatron", "loss"), d.field("tok", "loss"));
  EXPECT_EQ(d.field("megatron", "loss").size(), 4u);
}

}  // namespace
}  // namespace sy
