// Token files, the window sampler and text preparation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "data/sampler.h"
#include "data/token_file.h"
#include "engine/config_error.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("sy_data_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // The ConfigError message of opening (and vocab-checking) a file, or "" with a test failure.
  static std::string open_error(const std::string& p, uint32_t model_vocab = 0) {
    try {
      TokenFile f(p);
      if (model_vocab) f.check_vocab(model_vocab);
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
      return e.what();
    }
    ADD_FAILURE() << "no ConfigError for " << p;
    return "";
  }

  fs::path dir_;
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<uint32_t> iota_tokens(size_t n, uint32_t vocab) {
  std::vector<uint32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = uint32_t((i * 7919 + 3) % vocab);
  return t;
}

TEST_F(DataTest, TokenFileRoundTripUint16) {
  const auto toks = iota_tokens(1000, 65536);
  write_token_file(path("a.tok"), toks, 65536, 2);
  EXPECT_EQ(fs::file_size(path("a.tok")), 32u + 2000u);
  EXPECT_FALSE(fs::exists(path("a.tok.tmp")));
  TokenFile f(path("a.tok"));
  EXPECT_EQ(f.size(), 1000u);
  EXPECT_EQ(f.vocab(), 65536u);
  EXPECT_EQ(f.bytes_per_token(), 2);
  for (size_t i = 0; i < toks.size(); ++i) ASSERT_EQ(f.at(i), toks[i]);
  std::vector<int32_t> out(10);
  f.copy(990, 10, out.data());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(uint32_t(out[i]), toks[990 + i]);
  EXPECT_THROW(f.copy(995, 10, out.data()), std::out_of_range);
  EXPECT_THROW(f.at(1000), std::out_of_range);
  EXPECT_NO_THROW(f.check_vocab(65536));
}

TEST_F(DataTest, TokenFileRoundTripUint32) {
  const auto toks = iota_tokens(777, 100000);
  write_token_file(path("b.tok"), toks, 100000, 4);
  TokenFile f(path("b.tok"));
  EXPECT_EQ(f.size(), 777u);
  EXPECT_EQ(f.vocab(), 100000u);
  EXPECT_EQ(f.bytes_per_token(), 4);
  for (size_t i = 0; i < toks.size(); ++i) ASSERT_EQ(f.at(i), toks[i]);
}

TEST_F(DataTest, HeaderLayoutIsLittleEndian) {
  const std::vector<uint32_t> toks = {1, 258};
  write_token_file(path("h.tok"), toks, 300, 2);
  std::ifstream in(path("h.tok"), std::ios::binary);
  unsigned char b[36];
  in.read(reinterpret_cast<char*>(b), 36);
  ASSERT_EQ(in.gcount(), 36);
  EXPECT_EQ(std::memcmp(b, "SYTOKENS", 8), 0);
  const unsigned char rest[] = {1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 44, 1, 0, 0, 0, 0, 0, 0, 1, 0, 2, 1};
  EXPECT_EQ(std::memcmp(b + 8, rest, sizeof rest), 0);
}

TEST_F(DataTest, WriterRejectsBadTokens) {
  const std::vector<uint32_t> toks = {1, 2, 300};
  EXPECT_THROW(write_token_file(path("x.tok"), toks, 256, 2), ConfigError);
  EXPECT_THROW(write_token_file(path("x.tok"), toks, 70000, 2), ConfigError);
  EXPECT_THROW(write_token_file(path("x.tok"), toks, 400, 3), ConfigError);
}

TEST_F(DataTest, MissingFileNamesIt) {
  const std::string msg = open_error(path("nope.tok"));
  EXPECT_TRUE(has(msg, path("nope.tok"))) << msg;
  EXPECT_TRUE(has(msg, "switchyard data prepare")) << msg;
}

TEST_F(DataTest, BadMagic) {
  std::ofstream(path("bad.tok"), std::ios::binary) << std::string(40, 'x');
  const std::string msg = open_error(path("bad.tok"));
  EXPECT_TRUE(has(msg, path("bad.tok") + ": not a Switchyard token file (bad magic)")) << msg;
}

TEST_F(DataTest, TruncatedFile) {
  write_token_file(path("t.tok"), iota_tokens(100, 256), 256, 2);
  fs::resize_file(path("t.tok"), 32 + 150);
  std::string msg = open_error(path("t.tok"));
  EXPECT_TRUE(has(msg, path("t.tok"))) << msg;
  EXPECT_TRUE(has(msg, "truncated")) << msg;
  fs::resize_file(path("t.tok"), 20);  // not even a header
  msg = open_error(path("t.tok"));
  EXPECT_TRUE(has(msg, "truncated")) << msg;
}

TEST_F(DataTest, TokenIdBeyondModelVocab) {
  auto toks = iota_tokens(50, 256);
  toks[12] = 300;
  write_token_file(path("v.tok"), toks, 512, 2);
  const std::string msg = open_error(path("v.tok"), 256);
  EXPECT_TRUE(has(msg, path("v.tok") + ": token id 300 at position 12 >= model.vocab_size=256")) << msg;
  // Every id fits, but the file declares a larger vocabulary than the model's.
  write_token_file(path("w.tok"), iota_tokens(50, 256), 512, 2);
  const std::string msg2 = open_error(path("w.tok"), 256);
  EXPECT_TRUE(has(msg2, "model.vocab_size=256")) << msg2;
}

TEST_F(DataTest, SamplerTooShort) {
  write_token_file(path("s.tok"), iota_tokens(16, 256), 256, 2);
  TokenFile f(path("s.tok"));
  try {
    WindowSampler s(f, 16, 1);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(has(e.what(), path("s.tok"))) << e.what();
    EXPECT_TRUE(has(e.what(), "model.seq_len")) << e.what();
  }
  EXPECT_EQ(WindowSampler(f, 15, 1).windows(), 1);
}

TEST_F(DataTest, SamplerEpochsArePermutations) {
  const int64_t seq = 8, W = 37;
  std::vector<uint32_t> toks(size_t(W * seq + 1 + 5));  // a ragged tail that no window reaches
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = uint32_t(i % 60000);
  write_token_file(path("p.tok"), toks, 60000, 2);
  TokenFile f(path("p.tok"));
  WindowSampler s(f, seq, 42);
  ASSERT_EQ(s.windows(), W);
  std::vector<int32_t> in(seq), tg(seq);
  std::vector<std::vector<int64_t>> orders;
  for (int64_t e = 0; e < 3; ++e) {
    std::vector<int64_t> order;
    for (int64_t i = 0; i < W; ++i) {
      const int64_t g = e * W + i;
      s.sample(g, in.data(), tg.data());
      // Token i holds i here, so the window index is readable from the first input.
      const int64_t w = in[0] / seq;
      EXPECT_EQ(in[0], w * seq);
      EXPECT_EQ(w, s.window_of(g));
      for (int64_t t = 0; t < seq; ++t) {
        EXPECT_EQ(in[t], w * seq + t);
        EXPECT_EQ(tg[t], in[t] + 1);  // targets are the inputs shifted by one
      }
      order.push_back(w);
    }
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < W; ++i) ASSERT_EQ(sorted[i], i) << "epoch " << e << " is not a permutation";
    orders.push_back(order);
  }
  EXPECT_NE(orders[0], orders[1]);  // a fresh shuffle each epoch
  std::vector<int64_t> identity(W);
  for (int64_t i = 0; i < W; ++i) identity[i] = i;
  EXPECT_NE(orders[0], identity);
}

TEST_F(DataTest, SamplerDeterministicAndStateless) {
  write_token_file(path("d.tok"), iota_tokens(5000, 256), 256, 2);
  TokenFile f(path("d.tok"));
  WindowSampler a(f, 16, 7), b(f, 16, 7), c(f, 16, 8);
  std::vector<int32_t> ia(16), ta(16), ib(16), tb(16);
  // b visits the counters out of order and across epochs: the answers must not depend on history.
  const int64_t gs[] = {1000, 3, 500, 3, 0, 312, 311, 999};
  for (int64_t g : gs) {
    a.sample(g, ia.data(), ta.data());
    b.sample(g, ib.data(), tb.data());
    EXPECT_EQ(ia, ib);
    EXPECT_EQ(ta, tb);
  }
  int differ = 0;
  for (int64_t g = 0; g < 50; ++g) differ += a.window_of(g) != c.window_of(g);
  EXPECT_GT(differ, 0);  // the seed matters
  EXPECT_THROW(a.sample(-1, ia.data(), ta.data()), std::out_of_range);
}

TEST_F(DataTest, WindowInOrder) {
  std::vector<uint32_t> toks(101);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = uint32_t(i);
  write_token_file(path("o.tok"), toks, 256, 2);
  TokenFile f(path("o.tok"));
  WindowSampler s(f, 10, 1);
  ASSERT_EQ(s.windows(), 10);
  std::vector<int32_t> in(10), tg(10);
  s.window_in_order(9, in.data(), tg.data());
  EXPECT_EQ(in.front(), 90);
  EXPECT_EQ(tg.back(), 100);
  EXPECT_THROW(s.window_in_order(10, in.data(), tg.data()), std::out_of_range);
}

TEST_F(DataTest, PrepareTextSplitsByRecord) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "fortune " + std::to_string(i) + "\nsecond line\n%\n";
  std::ofstream(path("in.txt")) << text;
  const PrepareStats st = prepare_text_files({path("in.txt")}, path("out/c"), 20);
  EXPECT_EQ(st.train_records, 38);
  EXPECT_EQ(st.val_records, 2);
  TokenFile val(path("out/c.val.tok"));
  std::string v;
  for (uint64_t i = 0; i < val.size(); ++i) v += char(val.at(i));
  EXPECT_EQ(v, "fortune 19\nsecond line\n%\nfortune 39\nsecond line\n%\n");
  TokenFile train(path("out/c.train.tok"));
  EXPECT_EQ(train.vocab(), 256u);
  EXPECT_EQ(train.size() + val.size(), text.size());
}

TEST_F(DataTest, PrepareParagraphsAndErrors) {
  std::ofstream(path("p.txt")) << "one\n\ntwo\nlines\n\n\nthree\n\nfour\n";
  const PrepareStats st = prepare_text_files({path("p.txt")}, path("p"), 2);
  EXPECT_EQ(st.train_records, 2);
  EXPECT_EQ(st.val_records, 2);
  EXPECT_THROW(prepare_text_files({path("missing.txt")}, path("p"), 2), ConfigError);
  EXPECT_THROW(prepare_text_files({path("p.txt")}, path("p"), 20), ConfigError);  // no validation record
}

TEST_F(DataTest, PrepareFortunesFromDirectory) {
  // A stand-in for /usr/share/games/fortunes: *.dat, *.u8 and symlinks are not read.
  fs::create_directories(path("f"));
  std::ofstream(path("f/b")) << "B1\n%\nB2\n%\n";
  std::ofstream(path("f/a")) << "A1\n%\nA2\n%\n";
  std::ofstream(path("f/a.dat")) << "binary";
  fs::create_symlink(path("f/a"), path("f/a.u8"));
  fs::create_symlink(path("f/b"), path("f/c"));
  std::string body;
  for (int i = 0; i < 36; ++i) {
    body += 'Z';
    body += std::to_string(i);
    body += "\n%\n";
  }
  std::ofstream(path("f/z")) << body;
  const PrepareStats st = prepare_fortunes(path("fort"), path("f"));
  EXPECT_EQ(st.files, 3);
  EXPECT_EQ(st.train_records + st.val_records, 40);
  TokenFile val(path("fort.val.tok"));
  std::string v;
  for (uint64_t i = 0; i < val.size(); ++i) v += char(val.at(i));
  EXPECT_EQ(v, "Z15\n%\nZ35\n%\n");  // records 20 and 40 in name order a, b, z
}

}  // namespace
}  // namespace sy
