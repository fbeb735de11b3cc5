// Small kernels that exercise one feature of the CUDA execution model each, for the emulator's own
// tests (test_emu.cpp). They are ordinary CUDA: emu_test_kernels.cu is also compiled by nvcc.
// Each runner copies its inputs to the device, launches, and returns what the kernel wrote.
#pragma once

#include <cstdint>
#include <vector>

namespace sy::cuda::emutest {

// out[i] = a shared-memory neighbour of thread i after a barrier: each thread writes its slot,
// __syncthreads, then reads slot i-1 (thread 0 its own). `with_barrier = false` drops the
// barrier: the race a test must catch.
std::vector<float> neighbour_exchange(const std::vector<float>& in, bool with_barrier);

// One block of 64 threads; each writes 1 to out[t], after a barrier when gate > 0: a barrier
// that hangs on a floating-point argument, which direct mode does not see (cuda_emu.h).
std::vector<float> float_gated_barrier(float gate);

// Two block-wide sums in a row through one shared array of per-warp partials (the pattern of
// kernel_common.cuh's block_sum): out = {sum of in, sum of 2 * in}. Without the barrier after
// reading the partials, a warp that runs ahead overwrites its partial with the second sum before a
// slow warp has read the first.
std::vector<float> two_block_sums(const std::vector<float>& in, bool trailing_barrier);

// One block of `threads` threads; out[t] = shuffle of value(lane) = 100 * warp + lane + 0.5 by
// `kind` (0 idx, 1 up, 2 down, 3 xor) with the given param and width, full mask.
std::vector<float> shuffle(int threads, int kind, int param, int width);
// 8-byte payloads by __shfl_xor_sync: out[2t] = the double 1e10 + src / 3 and out[2t + 1] = the
// long long 2^40 + src (minus 2^40), where src is the lane thread t read.
std::vector<double> shuffle_xor_f64(int threads, int lane_mask);

// Votes of one warp with predicate pred[lane]: rows [ballot, any, all] for each lane. Lanes
// [0, 16) vote with mask 0x0000ffff and lanes [16, 32) with 0xffff0000 (two independent groups).
std::vector<uint32_t> votes(const std::vector<int>& pred, bool split_mask);

// `blocks` blocks of `threads` threads each add (blockIdx + 1) to an int and 0.5 to a float,
// take the max of the global thread index, and add 1.0 to a double through an atomicCAS loop.
// Returns {int sum, float sum, max, double sum}.
std::vector<double> atomics(int blocks, int threads);

// Reverses each block's slice of `in` through dynamic shared memory sized by the launch; also
// returns, per block, whether the dynamic shared memory read NaN before the block wrote it.
std::vector<float> reverse_blocks(const std::vector<float>& in, int threads, std::vector<int>* poisoned);

// 2-D blocks in a 3-D grid: every thread writes its flattened (blockIdx, threadIdx) coordinates.
std::vector<int32_t> coordinates(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by);

// Misuses the emulator must report (each launch throws syemu::EmuError under the emulator):
void divergent_barrier();     // threads >= 40 return before a __syncthreads
void mask_excludes_caller();  // lane 3 calls __shfl_sync with a mask without lane 3
void partial_warp_full_mask();  // a 48-thread block whose second warp shuffles with the full mask
void empty_grid();            // a launch with gridDim.x == 0
void warp_deadlock();         // lane 0 waits in a shuffle while lane 1 waits at a barrier

}  // namespace sy::cuda::emutest
