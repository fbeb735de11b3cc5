// The CUDA execution model on the host, so that the project's .cu kernel files compile with g++
// and run in CI on machines without a GPU (docs/cuda.md).
//
// What it models:
//  * a launch runs its blocks one after another; the threads of a block run concurrently, each as
//    a fiber (its own stack) scheduled cooperatively on the launching OS thread;
//  * __syncthreads() is a block barrier; __syncwarp, the shuffles and the votes are warp
//    collectives: each lane leaves its value in its slot, and the last lane of the mask to arrive
//    computes every lane's result. Between two sync points the lanes of a warp are independent
//    (Volta's independent thread scheduling), so a missing __syncwarp is a real bug here too;
//  * __shared__ variables are per block (blocks never overlap), dynamic shared memory is a per
//    launch buffer poisoned with 0xff bytes (NaN for floats) at the start of every block;
//  * atomics go through std::atomic_ref.
// A thread runs until it reaches a sync point, so the interleaving is "every segment between
// sync points runs atomically". Schedule::InOrder runs the ready threads in index order;
// Schedule::Shuffled gives the threads random priorities and always runs the ready thread of
// highest priority, so the order of segments changes with the seed and some threads fall behind
// while others pass several sync points: a missing
// __syncthreads (a read of another thread's write in the same segment, or a warp rewriting a
// shared buffer that a slow thread has not read yet) gives results that change with the seed.
// Direct mode (in order only): once a launch has run to the end without any thread reaching a
// barrier or warp collective, later launches of the same kernel with the same shape and integer
// arguments run each thread as a plain call, one after another: the same order and the same
// result without a fiber switch per thread. A direct launch that does reach a barrier (one that
// depends on memory contents or a floating-point argument) throws; set_direct_mode(false) or
// SY_EMU_DIRECT=0 turn the mode off.
//
// The emulator is stricter than the hardware where the hardware's behaviour is undefined: a
// __syncthreads that some threads skip by returning early, a warp collective whose mask excludes
// the caller, names lanes that do not exist or have exited, or reads a lane outside the mask, a
// launch with an empty grid or more than 1024 threads or 48 KiB of dynamic shared memory: each
// throws syemu::EmuError out of the launch with a message that says which.
#pragma once

#ifdef __CUDACC__
#error "cuda_emu.h is the host emulator; nvcc builds use the CUDA headers"
#endif

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "engine/cuda/emu/emu_bf16.h"
#include "engine/cuda/emu/emu_runtime.h"

// ---- keywords and built-in types ---------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One instance per function, which is one per block because blocks run one after another; the
// OS-thread-local storage keeps launches from different host threads apart (fibers share it).
#define __shared__ static thread_local

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

constexpr int warpSize = 32;

namespace syemu {

class EmuError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

enum class Schedule { InOrder, Shuffled };
// Applies to launches that start afterwards, from any host thread. The environment variable
// SY_EMU_SCHEDULE=shuffled[:seed] sets it for a whole process at its first launch.
void set_schedule(Schedule s, uint64_t seed = 1);
Schedule schedule();
void set_direct_mode(bool on);  // default on; SY_EMU_DIRECT=0 turns it off for a process

// Fiber stacks: 128 KiB each by default (kernels keep a few registers' worth of locals).
void set_stack_bytes(size_t bytes);

namespace detail {

enum class WarpOp : uint8_t { Sync, Idx, Up, Down, Xor, Ballot, Any, All };

struct ThreadCtx;  // one per emulated thread (defined in emu_scheduler.cpp)
struct BlockCtx {
  uint3 block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  std::byte* dynamic_smem = nullptr;
};

extern thread_local const uint3* t_thread_idx;  // the running fiber's threadIdx
extern thread_local BlockCtx t_block;

int syncthreads_count(int pred);  // the block barrier; returns how many threads passed pred != 0
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int param, int width);
// `key` identifies the launch for direct mode's memo of launches that never synchronise: the
// kernel, the launch shape and the integer, bool and enum arguments (a barrier under
// `if (flag)` or `if (n > 1024)` gets one key per value; pointers and floating-point values
// are left out so that a training step's launches meet their memo again at the next step).
void run_grid(dim3 grid, dim3 block, size_t dynamic_smem_bytes, const std::function<void()>& body, uint64_t key);

inline uint64_t mix_key(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull + (h >> 29); }
template <class T> uint64_t mix_arg(uint64_t h, const T& v) {
  if constexpr (std::is_integral_v<T> || std::is_enum_v<T>) return mix_key(h, uint64_t(v));
  else return h;
}

template <class T> uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp exchange of a value wider than 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T> T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace detail

inline void* dynamic_smem() { return detail::t_block.dynamic_smem; }

// A kernel launch: the arguments are converted to the kernel's parameter types once, as the CUDA
// runtime copies them, and every thread calls the kernel with its own copy.
template <class... P> struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  template <class... A> void operator()(A&&... args) const {
    const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    auto* k = kernel;
    uint64_t key = detail::mix_key(reinterpret_cast<uintptr_t>(k), smem);
    for (unsigned d : {grid.x, grid.y, grid.z, block.x, block.y, block.z}) key = detail::mix_key(key, d);
    std::apply([&](const auto&... p) { ((key = detail::mix_arg(key, p)), ...); }, params);
    detail::run_grid(grid, block, smem, [&] { std::apply(k, params); }, key);
  }
};

template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t /*stream*/) {
  return Launch<P...>{kernel, grid, block, smem};
}

}  // namespace syemu

#define threadIdx (*::syemu::detail::t_thread_idx)
#define blockIdx (static_cast<const uint3&>(::syemu::detail::t_block.block_idx))
#define blockDim (static_cast<const dim3&>(::syemu::detail::t_block.block_dim))
#define gridDim (static_cast<const dim3&>(::syemu::detail::t_block.grid_dim))

// ---- synchronisation, shuffles, votes ------------------------------------------------------------
inline void __syncthreads() { ::syemu::detail::syncthreads_count(0); }
inline int __syncthreads_count(int pred) { return ::syemu::detail::syncthreads_count(pred); }
inline int __syncthreads_or(int pred) { return ::syemu::detail::syncthreads_count(pred) > 0; }
inline int __syncthreads_and(int pred) {
  return ::syemu::detail::syncthreads_count(pred) == int(::syemu::detail::t_block.block_dim.x *
                                                          ::syemu::detail::t_block.block_dim.y *
                                                          ::syemu::detail::t_block.block_dim.z);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::syemu::detail::warp_collective(::syemu::detail::WarpOp::Sync, mask, 0, 0, warpSize);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T> T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  using namespace ::syemu::detail;
  return from_bits<T>(warp_collective(WarpOp::Idx, mask, to_bits(var), src_lane, width));
}
template <class T> T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::syemu::detail;
  return from_bits<T>(warp_collective(WarpOp::Up, mask, to_bits(var), int(delta), width));
}
template <class T> T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::syemu::detail;
  return from_bits<T>(warp_collective(WarpOp::Down, mask, to_bits(var), int(delta), width));
}
template <class T> T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  using namespace ::syemu::detail;
  return from_bits<T>(warp_collective(WarpOp::Xor, mask, to_bits(var), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  using namespace ::syemu::detail;
  return unsigned(warp_collective(WarpOp::Ballot, mask, pred != 0, 0, warpSize));
}
inline int __any_sync(unsigned mask, int pred) {
  using namespace ::syemu::detail;
  return int(warp_collective(WarpOp::Any, mask, pred != 0, 0, warpSize));
}
inline int __all_sync(unsigned mask, int pred) {
  using namespace ::syemu::detail;
  return int(warp_collective(WarpOp::All, mask, pred != 0, 0, warpSize));
}

// ---- atomics (return the old value, as CUDA's do) -------------------------------------------------
template <class T> T sy_emu_atomic_add(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
inline int atomicAdd(int* p, int v) { return sy_emu_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return sy_emu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return sy_emu_atomic_add(p, v); }
inline float atomicAdd(float* p, float v) { return sy_emu_atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return sy_emu_atomic_add(p, v); }
inline int atomicSub(int* p, int v) { return std::atomic_ref<int>(*p).fetch_sub(v); }
template <class T> T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> T atomicCAS(T* p, T compare, T v) {
  std::atomic_ref<T>(*p).compare_exchange_strong(compare, v);
  return compare;  // the old value whether or not it swapped
}
template <class T> T sy_emu_atomic_update(T* p, T v, bool take_max) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while ((take_max ? v > old : v < old) && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline int atomicMax(int* p, int v) { return sy_emu_atomic_update(p, v, true); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return sy_emu_atomic_update(p, v, true); }
inline int atomicMin(int* p, int v) { return sy_emu_atomic_update(p, v, false); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return sy_emu_atomic_update(p, v, false); }

// ---- device math that the host library lacks -----------------------------------------------------
// CUDA's classification functions are global in device code.
using std::isfinite;
using std::isinf;
using std::isnan;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T> T __ldg(const T* p) { return *p; }
