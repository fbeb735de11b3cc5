// Checkpoints over several ranks (ctest runs it under mpirun -np 2 and 4).
//   ckpt_ranks_test                 gtest: pieces from every rank's file read back in any range;
//                                   an ENOSPC on one rank reaches every rank and commits nothing
//   ckpt_ranks_test save DIR STEP   save the sample pieces at STEP (tests/mpi/ckpt_kill.sh runs
//                                   this under SY_FAULT_CKPT_KILL, tests/ckpt_h5py_check.py too)
//   ckpt_ranks_test resume DIR STEP remove_stale_tmp, print rank 0's find_resume_checkpoint, save
// Sample pieces: "w" [n + 1, 3] f32 split unevenly over all ranks (rank r holds r + 2 rows' worth
// of elements, the last rank the rest), "m" [7] f64 split in two by ranks 0 and n-1, "b" [2, 2]
// f32 replicated, passed by rank 0 only. Values depend on the element index and the step.
#include <gtest/gtest.h>

#include "mpi_gtest.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "parallel/comm_mpi.h"

namespace sy {
namespace {

namespace fs = std::filesystem;
Communicator* g_world = nullptr;

float w_value(int64_t i, int64_t step) { return 0.5f * float(i) - 3.0f + float(step); }
double m_value(int64_t i, int64_t step) { return 1.0 / double(i + 3) + double(step); }

struct Sample {
  std::vector<float> w, b;
  std::vector<double> m;
  SaveRequest req;
};

Sample make_sample(const std::string& dir, int64_t step, int rank, int n) {
  Sample s;
  const int64_t w_numel = (n + 1) * 3;
  // Rank r starts at sum_{q<r} (q + 2); the last rank takes whatever is left (never negative:
  // sum_{q<n-1} (q + 2) = (n-1)(n+2)/2 <= 3(n+1) for n <= 4).
  int64_t off = 0;
  for (int q = 0; q < rank; ++q) off += q + 2;
  const int64_t cnt = rank == n - 1 ? w_numel - off : rank + 2;
  for (int64_t i = 0; i < cnt; ++i) s.w.push_back(w_value(off + i, step));
  s.req = SaveRequest{dir, step, {}, {{"writer", "ckpt_ranks_test"}}, 3};
  s.req.pieces.push_back({"w", {n + 1, 3}, DType::F32, off, cnt, s.w.data()});
  if (rank == 0 || rank == n - 1) {
    const int64_t m_off = rank == 0 ? 0 : 4, m_cnt = n == 1 ? 7 : (rank == 0 ? 4 : 3);
    for (int64_t i = 0; i < m_cnt; ++i) s.m.push_back(m_value(m_off + i, step));
    s.req.pieces.push_back({"m", {7}, DType::F64, m_off, m_cnt, s.m.data()});
  }
  if (rank == 0) {
    s.b = {1.5f, -2.0f, float(step), 0.25f};
    s.req.pieces.push_back({"b", {2, 2}, DType::F32, 0, 4, s.b.data()});
  }
  return s;
}

std::string shared_dir(const std::string& tag) {
  int32_t pid = ::getpid();  // rank 0's pid names the directory for every rank
  g_world->broadcast(&pid, 1, CommType::I32, 0);
  return (fs::temp_directory_path() / ("sy_ckpt_mpi_" + tag + "_" + std::to_string(pid))).string();
}

std::string latest_of(const std::string& dir) {
  std::ifstream f(checkpoints_dir(dir) + "/latest");
  std::string s;
  std::getline(f, s);
  return s;
}

TEST(CkptRanks, PiecesFromEveryRankReadBackInAnyRange) {
  Communicator& w = *g_world;
  const int n = w.size(), r = w.rank();
  const std::string dir = shared_dir("roundtrip");
  if (r == 0) fs::remove_all(dir);
  w.barrier();
  Sample s = make_sample(dir, 5, r, n);
  save_checkpoint(w, s.req);
  CheckpointReader rd(checkpoints_dir(dir) + "/" + step_dir_name(5));
  EXPECT_EQ(rd.manifest().world_size, n);
  EXPECT_EQ(rd.manifest().files.size(), size_t(n));
  EXPECT_TRUE(rd.verify().empty());
  EXPECT_EQ(rd.shape("w"), (Shape{n + 1, 3}));
  // Each rank reads different ranges, all crossing rank-file boundaries somewhere.
  const int64_t numel = (n + 1) * 3;
  for (int64_t off = r % 3; off < numel; off += 2)
    for (int64_t len : {int64_t(1), numel - off}) {
      std::vector<double> got(len);
      rd.read("w", off, len, got.data(), DType::F64);
      for (int64_t i = 0; i < len; ++i) EXPECT_EQ(got[i], double(w_value(off + i, 5))) << off << "+" << i;
    }
  std::vector<float> mf(5);
  rd.read("m", 2, 5, mf.data(), DType::F32);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(mf[i], float(m_value(2 + i, 5)));
  std::vector<float> b(4);
  rd.read("b", 0, 4, b.data(), DType::F32);
  EXPECT_EQ(b, (std::vector<float>{1.5f, -2.0f, 5.0f, 0.25f}));
  w.barrier();  // everyone done reading before rank 0 deletes
  if (r == 0) fs::remove_all(dir);
}

TEST(CkptRanks, EnospcOnLastRankReachesEveryRank) {
  Communicator& w = *g_world;
  const int n = w.size(), r = w.rank();
  const std::string dir = shared_dir("enospc");
  if (r == 0) fs::remove_all(dir);
  w.barrier();
  Sample s1 = make_sample(dir, 1, r, n);
  save_checkpoint(w, s1.req);
  ::setenv("SY_FAULT_CKPT_ENOSPC", std::to_string(n - 1).c_str(), 1);
  Sample s2 = make_sample(dir, 2, r, n);
  std::string msg;
  try {
    save_checkpoint(w, s2.req);
  } catch (const CheckpointError& e) {
    msg = e.what();
  }
  ::unsetenv("SY_FAULT_CKPT_ENOSPC");
  EXPECT_NE(msg.find("checkpoint step 2 not saved: rank " + std::to_string(n - 1) + ": "), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(ENOSPC)), std::string::npos) << msg;
  w.barrier();
  const std::string root = checkpoints_dir(dir);
  EXPECT_EQ(latest_of(dir), "step_00000001");
  EXPECT_FALSE(fs::exists(root + "/step_00000002"));
  EXPECT_FALSE(fs::exists(root + "/step_00000002.tmp"));
  EXPECT_TRUE(CheckpointReader(root + "/step_00000001").verify().empty());
  w.barrier();
  if (r == 0) fs::remove_all(dir);
}


// The `save` and `resume` modes: exit 0 on success, 1 after printing a CheckpointError.
int run_mode(const std::string& mode, const std::string& dir, int64_t step) {
  Communicator& w = *g_world;
  try {
    if (mode == "resume") {
      remove_stale_tmp(w, dir);
      if (w.rank() == 0) std::printf("resume: %s\n", find_resume_checkpoint(dir).c_str());
    }
    Sample s = make_sample(dir, step, w.rank(), w.size());
    save_checkpoint(w, s.req);
    return 0;
  } catch (const std::exception& e) {
    std::printf("rank %d: %s\n", w.rank(), e.what());
    return 1;
  }
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  int rc = 1;
  const bool mode = argc == 4 && (std::strcmp(argv[1], "save") == 0 || std::strcmp(argv[1], "resume") == 0);
  if (!mode) ::testing::InitGoogleTest(&argc, argv);
  {
    // A dead peer must end the survivors quickly: 10 s is far above any save these tests make.
    auto world = sy::make_mpi_world_comm(10);
    sy::g_world = world.get();
    if (mode) {
      rc = sy::run_mode(argv[1], argv[2], std::atoll(argv[3]));
    } else {
      rc = sy::run_tests_on_ranks(*world);
    }
  }
  sy::mpi_finalize_if_initialised();
  return rc;
}
