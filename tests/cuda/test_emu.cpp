// The CUDA emulator's own tests: barrier, the four shuffles, votes, atomics, dynamic shared
// memory, thread and block coordinates, bf16 rounding, the misuses it reports, and a race that
// only the shuffled schedule exposes. Expected values come from the CUDA Programming Guide's
// description of each intrinsic, written out independently of the emulator's PTX-based code.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "engine/cuda/emu/cuda_emu.h"
#include "tests/cuda/emu_test_kernels.h"

namespace sy::cuda::emutest {
namespace {

// Restores the in-order schedule when a test that changed it ends, however it ends.
struct ScheduleGuard {
  ~ScheduleGuard() { syemu::set_schedule(syemu::Schedule::InOrder); }
};

std::vector<float> ramp(int n, float start) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[i] = start + float(i);
  return v;
}

std::vector<float> expected_neighbours(const std::vector<float>& in) {
  std::vector<float> want(in.size());
  for (size_t t = 0; t < in.size(); ++t) want[t] = in[t == 0 ? 0 : t - 1];
  return want;
}

TEST(CudaEmu, BarrierMakesEveryWriteVisibleToEveryThread) {
  ScheduleGuard guard;
  for (syemu::Schedule s : {syemu::Schedule::InOrder, syemu::Schedule::Shuffled})
    for (uint64_t seed = 1; seed <= 5; ++seed) {
      syemu::set_schedule(s, seed);
      const std::vector<float> in = ramp(256, 1000.0f * float(seed));
      EXPECT_EQ(neighbour_exchange(in, true), expected_neighbours(in)) << "seed " << seed;
    }
}

// Direct mode: a launch that never synchronised has its twins run as plain calls, with the same
// results; another value of an integer argument is another launch (the barrier under
// `if (with_barrier)` runs in fibers); a barrier behind a floating-point argument is reported,
// and runs with direct mode off.
TEST(CudaEmu, DirectModeRunsSyncFreeTwinsAsPlainCallsAndReportsABarrierItCannotSee) {
  ScheduleGuard guard;
  syemu::set_schedule(syemu::Schedule::InOrder);
  for (int i = 0; i < 3; ++i) {  // the first in fibers, then direct
    const std::vector<float> in = ramp(128, 11.0f * float(i + 1));
    EXPECT_EQ(neighbour_exchange(in, false), expected_neighbours(in)) << i;
    EXPECT_EQ(neighbour_exchange(in, true), expected_neighbours(in)) << i;
  }
  EXPECT_EQ(float_gated_barrier(0.0f), std::vector<float>(64, 1.0f));
  EXPECT_EQ(float_gated_barrier(0.0f), std::vector<float>(64, 1.0f));
  std::string error = "(no error)";
  try {
    float_gated_barrier(1.0f);
  } catch (const syemu::EmuError& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("__syncthreads in a launch whose earlier twins"), std::string::npos) << error;
  EXPECT_NE(error.find("SY_EMU_DIRECT=0"), std::string::npos) << error;
  syemu::set_direct_mode(false);
  EXPECT_EQ(float_gated_barrier(1.0f), std::vector<float>(64, 1.0f));
  syemu::set_direct_mode(true);
}

// Without the barrier each thread reads its lower neighbour's slot in the same segment. Run in
// thread order, the neighbour has always written first, so the race hides; in shuffled order it
// shows (a fresh input each launch, so a stale slot from the previous launch is wrong too).
TEST(CudaEmu, ShuffledScheduleCatchesAMissingSyncthreads) {
  ScheduleGuard guard;
  syemu::set_schedule(syemu::Schedule::InOrder);
  std::vector<float> in = ramp(256, 5.0f);
  EXPECT_EQ(neighbour_exchange(in, false), expected_neighbours(in));
  int caught = 0;
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    syemu::set_schedule(syemu::Schedule::Shuffled, seed);
    in = ramp(256, 7000.0f * float(seed));
    const std::vector<float> got = neighbour_exchange(in, false), want = expected_neighbours(in);
    int wrong = 0;
    for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != want[i];
    caught += wrong > 0;
    std::printf("[ emu race ] seed %d: %d of 256 threads read a stale slot\n", int(seed), wrong);
  }
  EXPECT_EQ(caught, 3);
}

// The other race of a missing barrier: reuse of a shared buffer. A thread only falls behind by
// whole sync points if the schedule lets others run ahead, which the shuffled schedule does.
TEST(CudaEmu, ShuffledScheduleCatchesAMissingTrailingBarrier) {
  ScheduleGuard guard;
  std::vector<float> in(256);
  for (int i = 0; i < 256; ++i) in[i] = float(i % 7);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    syemu::set_schedule(syemu::Schedule::Shuffled, seed);
    EXPECT_EQ(two_block_sums(in, true)[2], 0.0f) << "seed " << seed;
  }
  int caught = 0;
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    syemu::set_schedule(syemu::Schedule::Shuffled, seed);
    caught += two_block_sums(in, false)[2] != 0.0f;
  }
  std::printf("[ emu race ] missing trailing barrier caught by %d of 5 seeds\n", caught);
  EXPECT_GE(caught, 4);
}

int doc_source(int kind, int lane, int param, int width) {
  const int group = lane / width, pos = lane % width;
  switch (kind) {
    case 0: return group * width + param % width;                   // idx: modulo width, own segment
    case 1: return pos >= param ? lane - param : lane;               // up: the lower delta lanes keep theirs
    case 2: return pos + param < width ? lane + param : lane;        // down: the upper delta lanes keep theirs
    default: {
      const int src = lane ^ param;                                  // xor: earlier groups only
      return src >= 32 || src / width > group ? lane : src;
    }
  }
}

TEST(CudaEmu, ShufflesFollowTheProgrammingGuide) {
  const char* names[] = {"idx", "up", "down", "xor"};
  for (int kind = 0; kind < 4; ++kind)
    for (int width : {32, 16, 8, 4, 2, 1})
      for (int param : {0, 1, 3, 5, 16, 31, 37}) {
        if (kind != 0 && kind != 3 && param >= 32) continue;
        const std::vector<float> got = shuffle(64, kind, param, width);
        for (int t = 0; t < 64; ++t) {
          const int lane = t % 32, src = doc_source(kind, lane, param, width);
          ASSERT_EQ(got[t], 100.0f * float(t / 32) + float(src) + 0.5f)
              << names[kind] << " width " << width << " param " << param << " thread " << t;
        }
      }
}

TEST(CudaEmu, ShuffleMovesEightByteValues) {
  for (int m : {1, 7, 16}) {
    const std::vector<double> got = shuffle_xor_f64(64, m);
    for (int t = 0; t < 64; ++t) {
      const int src = (t & ~31) | ((t % 32) ^ m);
      EXPECT_EQ(got[2 * t], 1e10 + double(src) / 3) << t;
      EXPECT_EQ(got[2 * t + 1], double(src)) << t;
    }
  }
}

TEST(CudaEmu, VotesOverFullAndSplitMasks) {
  std::vector<int> pred(32);
  for (int i = 0; i < 32; ++i) pred[i] = (i * 7 + 3) % 5 == 0 ? 0 : i;  // true and false lanes mixed
  uint32_t bits = 0;
  for (int i = 0; i < 32; ++i) bits |= uint32_t(pred[i] != 0) << i;
  const std::vector<uint32_t> full = votes(pred, false);
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(full[l * 3 + 0], bits);
    EXPECT_EQ(full[l * 3 + 1], 1u);
    EXPECT_EQ(full[l * 3 + 2], 0u);
  }
  // Two groups that vote independently: all false in the low half, all true in the high half.
  for (int i = 16; i < 32; ++i) pred[i] = 1;
  for (int i = 0; i < 16; ++i) pred[i] = 0;
  const std::vector<uint32_t> split = votes(pred, true);
  for (int l = 0; l < 32; ++l) {
    const bool high = l >= 16;
    EXPECT_EQ(split[l * 3 + 0], high ? 0xffff0000u : 0u) << l;
    EXPECT_EQ(split[l * 3 + 1], high ? 1u : 0u) << l;
    EXPECT_EQ(split[l * 3 + 2], high ? 1u : 0u) << l;
  }
}

TEST(CudaEmu, AtomicsFromManyBlocksAndThreads) {
  ScheduleGuard guard;
  syemu::set_schedule(syemu::Schedule::Shuffled, 9);
  const int blocks = 7, threads = 96;
  const std::vector<double> r = atomics(blocks, threads);
  EXPECT_EQ(r[0], double(threads * blocks * (blocks + 1) / 2));
  EXPECT_EQ(r[1], 0.5 * blocks * threads);
  EXPECT_EQ(r[2], double(blocks * threads - 1));
  EXPECT_EQ(r[3], double(blocks * threads));
}

TEST(CudaEmu, DynamicSharedMemoryIsPerBlockAndStartsPoisoned) {
  const int threads = 128, blocks = 3;
  const std::vector<float> in = ramp(threads * blocks, 0.25f);
  std::vector<int> poisoned;
  const std::vector<float> got = reverse_blocks(in, threads, &poisoned);
  for (int b = 0; b < blocks; ++b) {
    EXPECT_EQ(poisoned[b], 1) << "block " << b << " saw the previous block's shared memory";
    for (int t = 0; t < threads; ++t) EXPECT_EQ(got[b * threads + t], in[b * threads + threads - 1 - t]);
  }
}

TEST(CudaEmu, BlockAndThreadCoordinates) {
  const unsigned gx = 3, gy = 2, gz = 2, bx = 8, by = 5;
  const std::vector<int32_t> got = coordinates(gx, gy, gz, bx, by);
  size_t g = 0;
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x)
        for (unsigned ty = 0; ty < by; ++ty)
          for (unsigned tx = 0; tx < bx; ++tx, ++g) {
            const std::vector<int32_t> want = {int32_t(x), int32_t(y), int32_t(z), int32_t(tx), int32_t(ty)};
            EXPECT_EQ(std::vector<int32_t>(got.begin() + g * 5, got.begin() + g * 5 + 5), want) << g;
          }
}

TEST(CudaEmu, Bf16RoundsToNearestEven) {
  auto bits = [](float f) { return __float2bfloat16(f).__x; };
  EXPECT_EQ(bits(1.0f), 0x3f80);
  EXPECT_EQ(bits(1.0f + 0x1p-8f), 0x3f80);            // halfway, even neighbour below
  EXPECT_EQ(bits(1.0f + 3 * 0x1p-8f), 0x3f82);        // halfway, even neighbour above
  EXPECT_EQ(bits(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // just above halfway
  EXPECT_EQ(bits(-2.5f), 0xc020);
  EXPECT_EQ(bits(INFINITY), 0x7f80);
  EXPECT_EQ(bits(3.4028235e38f), 0x7f80);  // rounds past the largest bf16 to inf
  EXPECT_EQ(bits(NAN), 0x7fff);
  EXPECT_EQ(bits(-NAN), 0x7fff);
  EXPECT_EQ(__bfloat162float(__float2bfloat16(0.1f)), 0.10009765625f);
}

template <class F> std::string emu_error(F&& f) {
  try {
    f();
  } catch (const syemu::EmuError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CudaEmu, ReportsMisuseInsteadOfGuessing) {
  EXPECT_NE(emu_error(divergent_barrier).find("reached by 40 of 64"), std::string::npos) << emu_error(divergent_barrier);
  EXPECT_NE(emu_error(mask_excludes_caller).find("excludes itself"), std::string::npos);
  EXPECT_NE(emu_error(partial_warp_full_mask).find("past the block's last thread"), std::string::npos);
  EXPECT_NE(emu_error(empty_grid).find("empty grid"), std::string::npos);
  EXPECT_NE(emu_error(warp_deadlock).find("deadlock"), std::string::npos) << emu_error(warp_deadlock);
  // The emulator is usable again after each of them.
  const std::vector<float> in = ramp(64, 3.0f);
  EXPECT_EQ(neighbour_exchange(in, true), expected_neighbours(in));
}

}  // namespace
}  // namespace sy::cuda::emutest
