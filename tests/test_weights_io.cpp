// HDF5 weights files: exact round trips in every dtype and awkward shape, the atomic write, and
// clean one-line failures for missing, damaged and foreign files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unistd.h>

#include "checkpoint/h5_check.h"
#include "checkpoint/weights_io.h"
#include "engine/config_error.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

// A directory of its own per test, so parallel ctest runs never share files.
class WeightsIo : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("sy_weights_io_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::vector<std::pair<std::string, HostArray>> sample_arrays() {
  std::vector<float> f(3 * 1 * 5);
  for (size_t i = 0; i < f.size(); ++i) f[i] = 0.1f * float(i) - 0.7f;
  f[4] = std::numeric_limits<float>::denorm_min();
  f[5] = -0.0f;
  std::vector<double> d(7);
  for (size_t i = 0; i < d.size(); ++i) d[i] = std::ldexp(1.0 + 1e-15 * double(i), int(i) * 100 - 300);
  std::vector<int32_t> ids = {0, -1, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min(), 5, 6};
  return {
      {"layers.3.moe.experts.5.w1", host_array({3, 1, 5}, f)},
      {"final_norm.weight", host_array({7}, d)},
      {"input_ids", host_array({2, 3}, ids)},
      {"loss", host_array({}, std::vector<double>{2.5})},  // a rank-0 scalar
      {"empty.rows", host_array({0, 4}, std::vector<float>{})},
  };
}

TEST_F(WeightsIo, RoundTripKeepsDtypeShapeAndBitsForEveryArray) {
  const auto arrays = sample_arrays();
  const std::map<std::string, std::string> attrs = {
      {"recipe", "[model]\nd_model = 16\n# unicode: \xce\xbb\n"}, {"step", "120"}, {"empty", ""}};
  write_weights_h5(path("w.h5"), arrays, attrs);

  const auto back = read_weights_h5(path("w.h5"));
  ASSERT_EQ(back.size(), arrays.size());
  for (const auto& [name, a] : arrays) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(back.count(name));
    const HostArray& b = back.at(name);
    EXPECT_EQ(b.dtype, a.dtype);
    EXPECT_EQ(b.shape, a.shape);
    EXPECT_EQ(b.bytes, a.bytes);
  }
  EXPECT_EQ(read_attrs_h5(path("w.h5")), attrs);
  EXPECT_FALSE(fs::exists(path("w.h5.tmp")));
}

TEST_F(WeightsIo, HostArrayConvertsToDoubleAndChecksItsType) {
  const HostArray f = host_array({2}, std::vector<float>{0.1f, -3.0f});
  EXPECT_EQ(f.to_f64(), (std::vector<double>{double(0.1f), -3.0}));
  EXPECT_EQ(host_array({3}, std::vector<int32_t>{-2, 0, 7}).to_f64(), (std::vector<double>{-2, 0, 7}));
  EXPECT_EQ(f.values<float>(), (std::vector<float>{0.1f, -3.0f}));
  EXPECT_THROW(f.values<double>(), std::logic_error);
  EXPECT_THROW(host_array({2, 2}, std::vector<double>{1, 2, 3}), std::invalid_argument);
}

TEST_F(WeightsIo, RewriteReplacesTheFileWhole) {
  write_weights_h5(path("w.h5"), sample_arrays(), {{"step", "1"}});
  write_weights_h5(path("w.h5"), {{"only", host_array({1}, std::vector<double>{4.0})}}, {{"step", "2"}});
  const auto back = read_weights_h5(path("w.h5"));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back.at("only").to_f64(), std::vector<double>{4.0});
  EXPECT_EQ(read_attrs_h5(path("w.h5")).at("step"), "2");
}

TEST_F(WeightsIo, FailedWriteLeavesThePreviousFileAndNoTemporary) {
  write_weights_h5(path("w.h5"), sample_arrays(), {{"step", "1"}});
  HostArray bad = host_array({4}, std::vector<float>{1, 2, 3, 4});
  bad.bytes.resize(3);  // shape and bytes disagree
  EXPECT_THROW(write_weights_h5(path("w.h5"), {{"a", host_array({1}, std::vector<float>{1})}, {"bad", bad}}),
               std::invalid_argument);
  EXPECT_THROW(write_weights_h5(path("w.h5"), {{"group/child", host_array({1}, std::vector<float>{1})}}),
               std::invalid_argument);
  EXPECT_THROW(write_weights_h5(path("w.h5"), {{"x", host_array({1}, std::vector<float>{1})},
                                               {"x", host_array({1}, std::vector<float>{2})}}),
               std::invalid_argument);
  EXPECT_FALSE(fs::exists(path("w.h5.tmp")));
  EXPECT_EQ(read_weights_h5(path("w.h5")).size(), sample_arrays().size());
  EXPECT_EQ(read_attrs_h5(path("w.h5")).at("step"), "1");
}

TEST_F(WeightsIo, UnwritableDirectoryIsAOneLineRuntimeError) {
  try {
    write_weights_h5(path("no/such/dir/w.h5"), sample_arrays());
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("H5Fcreate"), std::string::npos) << msg;
    EXPECT_NE(msg.find("weights_io.cpp:"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST_F(WeightsIo, MissingFileIsAConfigErrorNamingThePath) {
  using Reader = void (*)(const std::string&);
  const Reader readers[] = {[](const std::string& p) { read_weights_h5(p); },
                            [](const std::string& p) { read_attrs_h5(p); }};
  for (Reader read : readers) {
    try {
      read(path("absent.h5"));
      FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path("absent.h5") + ": cannot open HDF5 weights file (", 0), 0u) << msg;
      EXPECT_NE(msg.find("check the path"), std::string::npos) << msg;
    }
  }
}

TEST_F(WeightsIo, NonHdf5FileIsAConfigError) {
  std::ofstream(path("text.h5")) << "this is not HDF5\n";
  EXPECT_THROW(read_weights_h5(path("text.h5")), ConfigError);
  EXPECT_THROW(read_weights_h5(dir_.string()), ConfigError);
}

TEST_F(WeightsIo, TruncatedFileFailsCleanlyAtEveryLength) {
  // Large enough that the raw data dominates, so cuts land in the superblock, the metadata and
  // the data alike.
  std::vector<double> big(4096);
  for (size_t i = 0; i < big.size(); ++i) big[i] = double(i);
  auto arrays = sample_arrays();
  arrays.emplace_back("big", host_array({64, 64}, big));
  write_weights_h5(path("w.h5"), arrays, {{"recipe", "x"}});
  std::ifstream in(path("w.h5"), std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(whole.size(), 32768u);

  for (size_t len : {size_t(0), size_t(7), size_t(100), size_t(1000), size_t(2048), whole.size() / 2,
                     whole.size() - 8, whole.size() - 1}) {
    SCOPED_TRACE(len);
    std::ofstream(path("cut.h5"), std::ios::binary | std::ios::trunc).write(whole.data(), std::streamsize(len));
    try {
      read_weights_h5(path("cut.h5"));
      ADD_FAILURE() << "a truncated file was read without an error";
    } catch (const std::runtime_error& e) {  // ConfigError or a read failure, never a crash
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

// Files from other writers (h5py defaults to int64): groups are skipped, unsupported dtypes are
// named rather than converted.
TEST_F(WeightsIo, GroupsAreSkippedAndOtherDtypesAreNamed) {
  write_weights_h5(path("w.h5"), {{"a", host_array({2}, std::vector<float>{1, 2})}});
  h5_quiet();
  hid_t f = SY_H5_CHECK(H5Fopen(path("w.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  SY_H5_CHECK(H5Gclose(SY_H5_CHECK(H5Gcreate2(f, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT))));
  SY_H5_CHECK(H5Fclose(f));
  const auto back = read_weights_h5(path("w.h5"));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back.at("a").to_f64(), (std::vector<double>{1, 2}));

  f = SY_H5_CHECK(H5Fopen(path("w.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  const hsize_t dims[1] = {3};
  const int64_t v[3] = {1, 2, 3};
  hid_t space = SY_H5_CHECK(H5Screate_simple(1, dims, nullptr));
  hid_t ds = SY_H5_CHECK(H5Dcreate2(f, "ids64", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  SY_H5_CHECK(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
  SY_H5_CHECK(H5Dclose(ds));
  SY_H5_CHECK(H5Sclose(space));
  SY_H5_CHECK(H5Fclose(f));
  try {
    read_weights_h5(path("w.h5"));
    FAIL() << "expected an error for an int64 dataset";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'ids64'"), std::string::npos) << e.what();
  }
}

TEST_F(WeightsIo, CheckMacroReportsTheCallSite) {
  h5_quiet();
  try {
    SY_H5_CHECK(H5Dclose(hid_t(-1)));
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("test_weights_io.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("H5Dclose(hid_t(-1))"), std::string::npos) << msg;
  }
  EXPECT_EQ(SY_H5_CHECK(herr_t(0)), 0);
}

}  // namespace
}  // namespace sy
