// The emulator's scheduler: blocks one after another, a block's threads as fibers on the
// launching OS thread, the block barrier, and the warp collectives (see cuda_emu.h for the model).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <queue>
#include <random>
#include <unordered_set>
#include <vector>

#include "engine/cuda/emu/cuda_emu.h"
#include "engine/cuda/emu/emu_fiber.h"

namespace syemu {

namespace {

std::atomic<int> g_schedule{-1};  // -1: not yet read from SY_EMU_SCHEDULE
std::atomic<uint64_t> g_seed{1};
std::atomic<size_t> g_stack_bytes{size_t(128) << 10};
std::atomic<int> g_direct{-1};  // -1: not yet read from SY_EMU_DIRECT

bool direct_mode() {
  if (g_direct.load() < 0) {
    const char* env = std::getenv("SY_EMU_DIRECT");
    int unset = -1;
    g_direct.compare_exchange_strong(unset, env && std::string(env) == "0" ? 0 : 1);
  }
  return g_direct.load() == 1;
}

void read_environment_once() {
  if (g_schedule.load() >= 0) return;
  int mode = int(Schedule::InOrder);
  uint64_t seed = 1;
  if (const char* env = std::getenv("SY_EMU_SCHEDULE")) {
    const std::string s = env;
    if (s.rfind("shuffled", 0) == 0) {
      mode = int(Schedule::Shuffled);
      if (s.size() > 9 && s[8] == ':') seed = std::strtoull(s.c_str() + 9, nullptr, 10);
    }
  }
  int unset = -1;
  if (g_schedule.compare_exchange_strong(unset, mode)) g_seed = seed;
}

}  // namespace

void set_schedule(Schedule s, uint64_t seed) {
  g_seed = seed;
  g_schedule = int(s);
}

Schedule schedule() {
  read_environment_once();
  return Schedule(g_schedule.load());
}

void set_direct_mode(bool on) { g_direct = on ? 1 : 0; }

void set_stack_bytes(size_t bytes) { g_stack_bytes = std::max<size_t>(bytes, 16 << 10); }

namespace detail {

enum class State : uint8_t { Ready, AtBarrier, AtWarp, Done };

struct ThreadCtx {
  fiber::Context ctx;
  uint3 tid{0, 0, 0};
  int linear = 0;
  State state = State::Ready;
  WarpOp op = WarpOp::Sync;  // the collective it waits in, with its arguments and result
  unsigned mask = 0;
  uint64_t in = 0, out = 0;
  int param = 0, width = 32;
};

// Everything one OS thread needs to run launches; reused by its next launch.
struct Runner {
  std::vector<ThreadCtx> threads;
  std::vector<fiber::Stack> stacks;
  size_t stack_bytes = 0;
  int nthreads = 0;
  fiber::Context sched;
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;
  // Shuffled schedule: each thread's random priority (redrawn at every barrier) and the ready
  // threads by priority.
  bool track_ready = false;
  std::vector<uint64_t> priority;
  std::priority_queue<std::pair<uint64_t, int>> ready;
  std::mt19937_64* rng = nullptr;
  std::vector<std::byte> smem;  // dynamic shared memory, over-allocated for 128-byte alignment
  std::byte* smem_base = nullptr;
  uint64_t launches = 0;
  // Direct mode (see run_grid): the kernels seen to run a whole launch without a barrier or warp
  // collective, whether this launch runs its threads as plain calls, and whether a thread of the
  // present fiber-mode launch synchronised.
  std::unordered_set<uint64_t> sync_free;
  bool direct = false, synced = false;
};

thread_local Runner t_runner;
thread_local ThreadCtx* t_current = nullptr;
thread_local const uint3* t_thread_idx = nullptr;
thread_local BlockCtx t_block;

namespace {

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::Idx: return "__shfl_sync";
    case WarpOp::Up: return "__shfl_up_sync";
    case WarpOp::Down: return "__shfl_down_sync";
    case WarpOp::Xor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
  }
  return "?";
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string where(const ThreadCtx& t) {
  const uint3& b = t_block.block_idx;
  return "thread " + std::to_string(t.linear) + " (lane " + std::to_string(t.linear % 32) + " of warp " +
         std::to_string(t.linear / 32) + ") of block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," +
         std::to_string(b.z) + ")";
}

[[noreturn]] void fail(const std::string& msg) { throw EmuError("CUDA emulator: " + msg); }

void fiber_main() {
  Runner& r = t_runner;
  ThreadCtx* me = t_current;
  try {
    (*r.body)();
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  me->state = State::Done;
  fiber::swap(me->ctx, r.sched);  // the scheduler never resumes a finished fiber
  std::abort();
}

void yield(ThreadCtx* me) {
  fiber::swap(me->ctx, t_runner.sched);
  t_current = me;
  t_thread_idx = &me->tid;
}

ThreadCtx& current(const char* what) {
  if (!t_current) fail(std::string(what) + " called outside a kernel");
  return *t_current;
}

// The lane a shuffle reads, from PTX's definition of shfl.sync: the width's segment bounds the
// source, and a source outside them (or past the warp) reads the caller's own value.
int source_lane(WarpOp op, int lane, int b, int width) {
  const int segmask = (32 - width) & 31;
  const int cval = op == WarpOp::Up ? 0 : 31;
  const int max_lane = (lane & segmask) | (cval & ~segmask);
  const int min_lane = lane & segmask;
  int j = lane;
  bool ok = false;
  switch (op) {
    case WarpOp::Up: j = lane - b, ok = j >= max_lane; break;
    case WarpOp::Down: j = lane + b, ok = j <= max_lane; break;
    case WarpOp::Xor: j = lane ^ b, ok = j <= max_lane; break;
    case WarpOp::Idx: j = min_lane | (b & 31 & ~segmask), ok = j <= max_lane; break;
    default: break;
  }
  return ok ? j : lane;
}

// Every lane named by the mask has arrived: check they agree on the collective, compute each
// lane's result and make them all ready again.
void complete_warp(Runner& r, int base, WarpOp op, unsigned mask, int caller) {
  uint64_t ballot = 0;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const ThreadCtx& t = r.threads[base + l];
    if (t.op != op || t.mask != mask)
      fail("lanes of one warp meet in different collectives: " + where(t) + " is in " + op_name(t.op) + "(mask " +
           hex(t.mask) + "), another lane of the mask in " + op_name(op) + "(mask " + hex(mask) + ")");
    if (t.in) ballot |= uint64_t(1) << l;
  }
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    ThreadCtx& t = r.threads[base + l];
    switch (op) {
      case WarpOp::Sync: t.out = 0; break;
      case WarpOp::Ballot: t.out = ballot; break;
      case WarpOp::Any: t.out = ballot != 0; break;
      case WarpOp::All: t.out = ballot == mask; break;
      default: {
        const int j = source_lane(op, l, t.param, t.width);
        if (!(mask >> j & 1))
          fail(std::string(op_name(op)) + ": " + where(t) + " reads lane " + std::to_string(j) + ", outside the mask " +
               hex(mask) + " (undefined on the GPU)");
        t.out = r.threads[base + j].in;
      }
    }
    t.state = State::Ready;
    if (r.track_ready && base + l != caller) r.ready.push({r.priority[base + l], base + l});  // the caller runs on
  }
}

void start_fibers(Runner& r) {
  for (int i = 0; i < r.nthreads; ++i) {
    ThreadCtx& t = r.threads[i];
    t.state = State::Ready;
    fiber::make(t.ctx, r.stacks[i].lo(), r.stacks[i].usable(), fiber_main);
  }
}

// Fresh random priorities for every thread, all of them ready.
void draw_priorities(Runner& r) {
  r.priority.resize(size_t(r.nthreads));
  r.ready = {};
  for (int i = 0; i < r.nthreads; ++i) {
    r.priority[i] = (*r.rng)();
    r.ready.push({r.priority[i], i});
  }
}

// Runs one thread until it blocks (barrier, warp collective) or returns.
void resume(Runner& r, ThreadCtx& t) {
  t_current = &t;
  t_thread_idx = &t.tid;
  fiber::swap(r.sched, t.ctx);
  t_current = nullptr;
  if (r.error) std::rethrow_exception(r.error);
}

// No thread is ready: every thread has returned (true), or all wait at the barrier, which is
// released; anything else is a divergent barrier or a deadlock, reported.
bool settle(Runner& r) {
  int barrier = 0, warp = 0, done = 0;
  const ThreadCtx* waiting = nullptr;
  for (const ThreadCtx& t : r.threads) {
    if (t.state == State::AtBarrier) ++barrier;
    if (t.state == State::AtWarp) ++warp, waiting = waiting ? waiting : &t;
    if (t.state == State::Done) ++done;
  }
  if (done == r.nthreads) return true;
  if (barrier + done == r.nthreads && done > 0)
    fail("__syncthreads reached by " + std::to_string(barrier) + " of " + std::to_string(r.nthreads) +
         " threads of block (" + std::to_string(t_block.block_idx.x) + "," + std::to_string(t_block.block_idx.y) +
         "," + std::to_string(t_block.block_idx.z) + "); the other " + std::to_string(done) +
         " returned before it (a barrier in divergent code)");
  if (barrier == r.nthreads) {
    uint64_t count = 0;  // for __syncthreads_count / _and / _or
    for (const ThreadCtx& t : r.threads) count += t.in != 0;
    for (ThreadCtx& t : r.threads) t.state = State::Ready, t.out = count;
    if (r.track_ready) draw_priorities(r);
    return false;
  }
  std::string msg = "deadlock: " + std::to_string(barrier) + " threads wait at __syncthreads, " +
                    std::to_string(warp) + " in warp collectives, " + std::to_string(done) + " have returned";
  if (waiting)
    msg += "; " + where(*waiting) + " waits in " + op_name(waiting->op) + "(mask " + hex(waiting->mask) +
           ") for lanes that never arrive";
  fail(msg);
}

// Runs one block to completion. In order: passes over the threads in index order, each ready
// thread running to its next sync point. Shuffled: threads get random priorities (redrawn at each
// barrier) and the ready thread of highest priority always runs next, as in probabilistic
// concurrency testing: the order of segments is random, and a warp whose lanes all drew high
// priorities runs ahead through several sync points while a low-priority thread waits. That
// exposes both races of a missing barrier: a read of another thread's write in the same segment,
// and a warp rewriting a shared buffer that a slow thread has not read yet.
void run_block(Runner& r, std::mt19937_64* rng) {
  start_fibers(r);
  r.track_ready = rng != nullptr;
  r.rng = rng;
  if (rng) {
    draw_priorities(r);
    for (;;) {
      while (!r.ready.empty()) {
        const int i = r.ready.top().second;
        r.ready.pop();
        resume(r, r.threads[i]);
      }
      if (settle(r)) return;
    }
  }
  for (;;) {
    bool ran = false;
    for (int i = 0; i < r.nthreads; ++i)
      if (r.threads[i].state == State::Ready) resume(r, r.threads[i]), ran = true;
    if (!ran && settle(r)) return;
  }
}

struct CurrentReset {
  ~CurrentReset() {
    t_runner.direct = false;
    t_current = nullptr;
    t_thread_idx = nullptr;
  }
};

}  // namespace

// A kernel in direct mode synchronised after all: its threads before this one have run to the
// end, so the launch cannot be finished faithfully.
void check_not_direct(const char* what) {
  if (t_runner.direct)
    fail(std::string(what) + " in a launch whose earlier twins (same kernel, shape and integer arguments) never "
         "synchronised, so its threads run one after another without fibers; a barrier that depends on memory or a "
         "floating-point argument is not emulated in direct mode: run with SY_EMU_DIRECT=0");
  t_runner.synced = true;
}

int syncthreads_count(int pred) {
  check_not_direct("__syncthreads");
  ThreadCtx& me = current("__syncthreads");
  me.in = pred != 0;
  me.state = State::AtBarrier;
  yield(&me);
  return int(me.out);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int param, int width) {
  check_not_direct(op_name(op));
  ThreadCtx& me = current(op_name(op));
  Runner& r = t_runner;
  const int lane = me.linear % 32, base = me.linear - lane;
  if (!(mask >> lane & 1))
    fail(std::string(op_name(op)) + ": " + where(me) + " calls it with mask " + hex(mask) + ", which excludes itself");
  const int lanes = std::min(32, r.nthreads - base);
  if (lanes < 32 && (mask >> lanes) != 0)
    fail(std::string(op_name(op)) + ": mask " + hex(mask) + " names lanes past the block's last thread (" + where(me) +
         "; the block has " + std::to_string(r.nthreads) + " threads)");
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail(std::string(op_name(op)) + ": width " + std::to_string(width) + " is not a power of two up to 32");
  me.op = op, me.mask = mask, me.in = value, me.param = param, me.width = width;
  me.state = State::AtWarp;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const ThreadCtx& t = r.threads[base + l];
    if (t.state == State::Done)
      fail(std::string(op_name(op)) + ": " + where(me) + " names lane " + std::to_string(l) +
           " in its mask, which has returned");
    if (t.state != State::AtWarp) {
      yield(&me);  // the last lane to arrive completes the collective for all of them
      return me.out;
    }
  }
  complete_warp(r, base, op, mask, me.linear);
  return me.out;
}

void run_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body, uint64_t key) {
  if (t_current) fail("a kernel launched from inside a kernel (dynamic parallelism is not emulated)");
  auto dims = [](dim3 d) {  // snprintf: GCC 12 warns falsely (-Wrestrict) on the string sum
    char buf[48];
    std::snprintf(buf, sizeof buf, "(%u,%u,%u)", d.x, d.y, d.z);
    return std::string(buf);
  };
  if (uint64_t(grid.x) * grid.y * grid.z == 0)
    fail("launch with an empty grid " + dims(grid) + " (invalid configuration on the GPU: skip the launch instead)");
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) fail("grid " + dims(grid) + " exceeds the limits");
  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64)
    fail("block " + dims(block) + " is empty or has more than 1024 threads");
  if (smem_bytes > 48 * 1024)
    fail("dynamic shared memory of " + std::to_string(smem_bytes) + " bytes exceeds the 48 KiB default limit");

  Runner& r = t_runner;
  const size_t stack_bytes = g_stack_bytes.load();
  if (r.stack_bytes != stack_bytes) r.stacks.clear(), r.stack_bytes = stack_bytes;
  while (r.stacks.size() < nthreads) r.stacks.emplace_back(stack_bytes);
  r.nthreads = int(nthreads);
  r.threads.resize(nthreads);
  for (int i = 0; i < r.nthreads; ++i) {
    ThreadCtx& t = r.threads[i];
    t.linear = i;
    t.tid = uint3{unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y)};
  }
  if (r.smem.size() < smem_bytes + 128) {
    r.smem.resize(smem_bytes + 128);
    r.smem_base = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(r.smem.data()) + 127) & ~uintptr_t(127));
  }
  r.body = &body;
  r.error = nullptr;
  t_block.grid_dim = grid;
  t_block.block_dim = block;
  t_block.dynamic_smem = smem_bytes ? r.smem_base : nullptr;

  std::unique_ptr<std::mt19937_64> rng;
  if (schedule() == Schedule::Shuffled)
    rng = std::make_unique<std::mt19937_64>(g_seed.load() * 0x9e3779b97f4a7c15ull + r.launches);
  ++r.launches;
  CurrentReset reset;
  r.direct = !rng && direct_mode() && r.sync_free.count(key);
  r.synced = false;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        t_block.block_idx = uint3{x, y, z};
        if (smem_bytes) std::memset(r.smem_base, 0xff, smem_bytes);
        if (r.direct) {
          for (ThreadCtx& t : r.threads) {
            t_current = &t;
            t_thread_idx = &t.tid;
            body();
          }
        } else {
          run_block(r, rng.get());
        }
      }
  if (!r.direct && !r.synced) r.sync_free.insert(key);
}

}  // namespace detail
}  // namespace syemu
