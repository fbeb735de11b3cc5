// Checkpoints on one process (the local communicator): CRC32C, exact round trips of pieces with
// dtype conversion, the completeness audit, damage detection, pruning, stale tmp removal, an
// injected ENOSPC and resume fallback. tests/mpi/ckpt_ranks_test.cpp covers several ranks.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/mini_json.h"
#include "engine/config_error.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

TEST(Crc32c, StandardCheckValueAndChaining) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
  EXPECT_EQ(crc32c_portable(s, 9), 0xE3069283u);
  EXPECT_EQ(crc32c(s, 0), 0u);
  std::vector<unsigned char> data(1001);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>(i * 131 + 7);
  // Every length and split point exercises the 8-byte and byte tails of the hardware path.
  for (size_t n : {1, 7, 8, 9, 63, 1001}) {
    EXPECT_EQ(crc32c(data.data(), n), crc32c_portable(data.data(), n)) << n;
    if (n >= 3) {
      EXPECT_EQ(crc32c(data.data() + 3, n - 3, crc32c(data.data(), 3)), crc32c(data.data(), n)) << n;
    }
  }
}

TEST(MiniJson, QuoteParseRoundTripAndStrictness) {
  const std::string nasty = "line1\nquote\" back\\slash\ttab \x01 caf\xC3\xA9";
  const json::Value v = json::parse("{\"a\": [1, -2, true, false], \"s\": " + json::quote(nasty) + "}");
  EXPECT_EQ(v.at("s").as_string("s"), nasty);
  EXPECT_EQ(v.at("a").as_array("a")[1].as_int("x"), -2);
  EXPECT_TRUE(v.at("a").items[2].flag);
  EXPECT_FALSE(v.at("a").items[3].flag);
  EXPECT_THROW(json::parse("{\"a\": 1.5}"), std::runtime_error);
  EXPECT_THROW(json::parse("{\"a\": 1} x"), std::runtime_error);
  EXPECT_THROW(json::parse("{\"a\": \"open"), std::runtime_error);
}

class Ckpt : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::temp_directory_path() / ("sy_ckpt_" + std::string(info->name()) + "_" + std::to_string(::getpid())))
               .string();
    fs::remove_all(dir_);
    comm_ = make_local_comm();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string root() const { return checkpoints_dir(dir_); }
  std::string step(int64_t s) const { return root() + "/" + step_dir_name(s); }
  std::string latest() const {
    std::ifstream f(root() + "/latest");
    std::string s;
    std::getline(f, s);
    return s;
  }

  // "w" [3, 4] f32 in two pieces ([0, 5) and [5, 12)), "b" [5] f64 whole, "n" [2] i32 whole.
  void save(int64_t s, int keep = 3, float base = 1000.5f) {
    w_.resize(12);
    for (int i = 0; i < 12; ++i) w_[i] = base + 0.25f * float(i);
    b_ = {1.0 / 3.0, -2.5e-300, 7.0, 0.1, 1e300};
    n_ = {-7, 123456};
    SaveRequest req{dir_, s, {}, {{"recipe", "[model]\nd = 8\n"}, {"layout", "dp1"}}, keep};
    req.pieces.push_back({"w", {3, 4}, DType::F32, 5, 7, w_.data() + 5});
    req.pieces.push_back({"w", {3, 4}, DType::F32, 0, 5, w_.data()});
    req.pieces.push_back({"b", {5}, DType::F64, 0, 5, b_.data()});
    req.pieces.push_back({"n", {2}, DType::I32, 0, 2, n_.data()});
    save_checkpoint(*comm_, req);
  }

  // Flips one byte inside the stored values of w's first piece (found by its bytes).
  void flip_w_byte(int64_t s) {
    const std::string path = step(s) + "/rank_00000.h5";
    std::string bytes;
    {
      std::ifstream f(path, std::ios::binary);
      std::ostringstream o;
      o << f.rdbuf();
      bytes = o.str();
    }
    const std::string needle(reinterpret_cast<const char*>(w_.data()), 5 * sizeof(float));
    const size_t at = bytes.find(needle);
    ASSERT_NE(at, std::string::npos);
    bytes[at + 9] ^= 0x10;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::string dir_;
  std::unique_ptr<Communicator> comm_;
  std::vector<float> w_;
  std::vector<double> b_;
  std::vector<int32_t> n_;
};

TEST_F(Ckpt, RoundTripAnyRangeWithConversion) {
  save(12);
  EXPECT_EQ(latest(), "step_00000012");
  CheckpointReader r(step(12));
  EXPECT_EQ(r.step(), 12);
  EXPECT_EQ(r.attrs().at("recipe"), "[model]\nd = 8\n");
  EXPECT_EQ(r.names(), (std::vector<std::string>{"b", "n", "w"}));
  EXPECT_EQ(r.shape("w"), (Shape{3, 4}));
  EXPECT_EQ(r.dtype("b"), DType::F64);
  EXPECT_TRUE(r.verify().empty());
  // Every range of w, spanning the two pieces or inside one, as f32 and widened to f64.
  for (int64_t off = 0; off < 12; ++off)
    for (int64_t n = 0; off + n <= 12; ++n) {
      std::vector<float> f(n);
      std::vector<double> d(n);
      r.read("w", off, n, f.data(), DType::F32);
      r.read("w", off, n, d.data(), DType::F64);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(f[i], w_[off + i]);
        EXPECT_EQ(d[i], double(w_[off + i]));
      }
    }
  std::vector<double> b(5);
  r.read("b", 0, 5, b.data(), DType::F64);
  EXPECT_EQ(b, b_);
  std::vector<float> bf(3);
  r.read("b", 1, 3, bf.data(), DType::F32);
  EXPECT_EQ(bf, (std::vector<float>{float(b_[1]), 7.0f, 0.1f}));
  std::vector<int32_t> n(2);
  r.read("n", 0, 2, n.data(), DType::I32);
  EXPECT_EQ(n, n_);
  EXPECT_THROW(r.read("n", 0, 2, b.data(), DType::F64), CheckpointError);
  EXPECT_THROW(r.read("w", 10, 3, bf.data(), DType::F32), CheckpointError);
  EXPECT_THROW(r.shape("nope"), ConfigError);
}

TEST_F(Ckpt, FlippedByteNamesTensorAndReadThrows) {
  save(1);
  flip_w_byte(1);
  CheckpointReader r(step(1));
  const auto problems = r.verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("tensor w "), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("CRC32C mismatch"), std::string::npos) << problems[0];
  std::vector<float> f(12);
  EXPECT_THROW(r.read("w", 3, 4, f.data(), DType::F32), CheckpointError);
  EXPECT_NO_THROW(r.read("w", 6, 4, f.data(), DType::F32));  // the other piece is intact
}

TEST_F(Ckpt, TruncatedAndDeletedFilesAreNamed) {
  save(1);
  const std::string file = step(1) + "/rank_00000.h5";
  fs::resize_file(file, fs::file_size(file) / 2);
  auto problems = CheckpointReader(step(1)).verify();
  ASSERT_FALSE(problems.empty());
  for (const auto& p : problems) EXPECT_NE(p.find("rank_00000.h5"), std::string::npos) << p;
  fs::remove(file);
  problems = CheckpointReader(step(1)).verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0], "file rank_00000.h5: missing from " + step(1));
  fs::remove(step(1) + "/manifest.json");
  EXPECT_THROW(CheckpointReader{step(1)}, ConfigError);
}

TEST_F(Ckpt, AuditFindsOverlapsAndGaps) {
  save(1);
  const std::string mpath = step(1) + "/manifest.json";
  std::ostringstream o;
  o << std::ifstream(mpath).rdbuf();
  const std::string good = o.str();
  auto with = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(mpath, std::ios::trunc) << text;
    return CheckpointReader(step(1)).verify();
  };
  // The second piece of w starts one element early (overlap), then one late (gap).
  auto p = with("\"offset\": 5, \"count\": 7", "\"offset\": 4, \"count\": 7");
  ASSERT_FALSE(p.empty());
  EXPECT_NE(p[0].find("tensor w: pieces overlap"), std::string::npos) << p[0];
  p = with("\"offset\": 5, \"count\": 7", "\"offset\": 6, \"count\": 6");
  ASSERT_FALSE(p.empty());
  EXPECT_NE(p[0].find("tensor w: elements [5, 6) are in no piece"), std::string::npos) << p[0];

  // A save whose pieces do not tile the tensor is refused and commits nothing.
  std::vector<float> x(4, 1.0f);
  SaveRequest bad{dir_, 2, {{"x", {4}, DType::F32, 0, 3, x.data()}, {"x", {4}, DType::F32, 2, 2, x.data()}}, {}, 3};
  EXPECT_THROW(save_checkpoint(*comm_, bad), CheckpointError);
  EXPECT_FALSE(fs::exists(step(2)));
  EXPECT_FALSE(fs::exists(step(2) + ".tmp"));
  EXPECT_EQ(latest(), "step_00000001");
}

TEST_F(Ckpt, KeepPrunesOldestButNeverLatest) {
  for (int s = 1; s <= 5; ++s) save(s, 3);
  for (int s = 1; s <= 5; ++s) EXPECT_EQ(fs::exists(step(s)), s >= 3) << s;
  EXPECT_EQ(latest(), "step_00000005");
  save(2, 1);  // an older step becomes latest (a resumed run re-saving): it survives keep = 1
  EXPECT_EQ(latest(), "step_00000002");
  EXPECT_TRUE(fs::exists(step(2)));
  EXPECT_TRUE(fs::exists(step(5)));
  EXPECT_FALSE(fs::exists(step(3)));
  EXPECT_TRUE(CheckpointReader(step(2)).verify().empty());
}

TEST_F(Ckpt, StaleTmpRemoved) {
  save(1);
  fs::create_directories(step(7) + ".tmp");
  std::ofstream(step(7) + ".tmp/rank_00000.h5") << "partial";
  std::ofstream(root() + "/latest.tmp") << "step_00000007\n";
  remove_stale_tmp(*comm_, dir_);
  EXPECT_FALSE(fs::exists(step(7) + ".tmp"));
  EXPECT_FALSE(fs::exists(root() + "/latest.tmp"));
  EXPECT_TRUE(fs::exists(step(1)));
  EXPECT_EQ(latest(), "step_00000001");
  remove_stale_tmp(*comm_, dir_ + "/never_created");  // nothing there: nothing to do
}

TEST_F(Ckpt, InjectedEnospcCommitsNothing) {
  save(1);
  ::setenv("SY_FAULT_CKPT_ENOSPC", "0", 1);
  try {
    save(2);
    ADD_FAILURE() << "save succeeded despite ENOSPC";
  } catch (const CheckpointError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("checkpoint step 2 not saved: rank 0: "), std::string::npos) << m;
    EXPECT_NE(m.find(std::strerror(ENOSPC)), std::string::npos) << m;
  }
  ::unsetenv("SY_FAULT_CKPT_ENOSPC");
  EXPECT_FALSE(fs::exists(step(2)));
  EXPECT_FALSE(fs::exists(step(2) + ".tmp"));
  EXPECT_EQ(latest(), "step_00000001");
  EXPECT_TRUE(CheckpointReader(step(1)).verify().empty());
  save(2);  // the same step saves fine once the disk has room
  EXPECT_EQ(latest(), "step_00000002");
}

TEST_F(Ckpt, ResumeFallsBackPastCorruptNewest) {
  EXPECT_EQ(find_resume_checkpoint(dir_), "");
  save(1);
  save(2, 3, 2000.5f);
  EXPECT_EQ(find_resume_checkpoint(dir_), step(2));
  flip_w_byte(2);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(dir_), step(1));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: checkpoint " + step(2) + " fails verification (tensor w "), std::string::npos) << err;
  // `latest` naming a directory that is gone falls back too.
  fs::remove_all(step(2));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(find_resume_checkpoint(dir_), step(1));
  ::testing::internal::GetCapturedStderr();
}

}  // namespace
}  // namespace sy
