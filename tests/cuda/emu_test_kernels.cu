// Kernels for the emulator's own tests (see emu_test_kernels.h). Plain CUDA: nvcc compiles this
// file too, so the semantics the tests pin down are those of source the GPU accepts.
#include "tests/cuda/emu_test_kernels.h"

#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels/kernel_common.cuh"

namespace sy::cuda::emutest {

namespace {

__global__ void neighbour_kernel(const float* in, float* out, int n, int with_barrier) {
  __shared__ float slot[1024];
  const int t = threadIdx.x;
  slot[t] = in[t];
  if (with_barrier) __syncthreads();
  out[t] = slot[t == 0 ? 0 : t - 1];
}

__global__ void float_gated_kernel(float* out, float gate) {
  if (gate > 0) __syncthreads();
  out[threadIdx.x] = 1;
}

__device__ float sum_once(float v, int trailing_barrier) {
  __shared__ float part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < warps; ++w) total += part[w];
  if (trailing_barrier) __syncthreads();
  return total;
}

__global__ void two_sums_kernel(const float* in, float* out, int trailing_barrier) {
  const float x = in[threadIdx.x];
  const float a = sum_once(x, trailing_barrier), b = sum_once(2 * x, trailing_barrier);
  // Every thread checks what it got; one wrong thread makes the block's answer wrong.
  const int wrong = __syncthreads_or(a != out[0] || b != out[1]);
  if (threadIdx.x == 0) out[2] = float(wrong);
}

__global__ void shuffle_kernel(float* out, int kind, int param, int width) {
  const int t = threadIdx.x, lane = t % 32;
  const float v = 100.0f * float(t / 32) + float(lane) + 0.5f;
  float r = 0;
  switch (kind) {
    case 0: r = __shfl_sync(kFullMask, v, param, width); break;
    case 1: r = __shfl_up_sync(kFullMask, v, unsigned(param), width); break;
    case 2: r = __shfl_down_sync(kFullMask, v, unsigned(param), width); break;
    default: r = __shfl_xor_sync(kFullMask, v, param, width); break;
  }
  out[t] = r;
}

__global__ void shuffle_f64_kernel(double* out, int lane_mask) {
  const int t = threadIdx.x;
  const double v = 1e10 + double(t) / 3;
  const long long w = (1ll << 40) + t;
  out[2 * t] = __shfl_xor_sync(kFullMask, v, lane_mask);
  out[2 * t + 1] = double(__shfl_xor_sync(kFullMask, w, lane_mask) - (1ll << 40));
}

__global__ void vote_kernel(const int* pred, uint32_t* out, int split) {
  const int lane = threadIdx.x;
  const unsigned mask = split ? (lane < 16 ? 0x0000ffffu : 0xffff0000u) : kFullMask;
  const int p = pred[lane];
  out[lane * 3 + 0] = __ballot_sync(mask, p);
  out[lane * 3 + 1] = unsigned(__any_sync(mask, p));
  out[lane * 3 + 2] = unsigned(__all_sync(mask, p));
}

__global__ void atomics_kernel(int* isum, float* fsum, int* imax, double* dsum) {
  const int g = int(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(isum, int(blockIdx.x) + 1);
  atomicAdd(fsum, 0.5f);
  atomicMax(imax, g);
  // A double add through compare-and-swap on its bits: the classic pattern for types without a
  // native atomic, which must retry when another thread got in between.
  unsigned long long* bits = reinterpret_cast<unsigned long long*>(dsum);
  unsigned long long old = *bits, seen;
  do {
    seen = old;
    double v;
    memcpy(&v, &seen, sizeof v);
    v += 1.0;
    unsigned long long nv;
    memcpy(&nv, &v, sizeof nv);
    old = atomicCAS(bits, seen, nv);
  } while (old != seen);
}

__global__ void reverse_kernel(const float* in, float* out, int* poisoned) {
  SY_DYNAMIC_SMEM(float, buf);
  const int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
  // Every thread looks at a slot before anyone writes: NaN means the block saw fresh memory.
  const float before = buf[t];
  const int nan_seen = __syncthreads_or(before != before);
  buf[t] = in[base + t];
  __syncthreads();
  out[base + t] = buf[n - 1 - t];
  if (t == 0) poisoned[blockIdx.x] = nan_seen;
}

__global__ void coordinate_kernel(int32_t* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * threadIdx.y;
  const unsigned g = block * blockDim.x * blockDim.y + thread;
  out[g * 5 + 0] = int32_t(blockIdx.x);
  out[g * 5 + 1] = int32_t(blockIdx.y);
  out[g * 5 + 2] = int32_t(blockIdx.z);
  out[g * 5 + 3] = int32_t(threadIdx.x);
  out[g * 5 + 4] = int32_t(threadIdx.y);
}

__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x >= 40) return;
  out[threadIdx.x] = 1;
  __syncthreads();
}

__global__ void bad_mask_kernel(float* out) {
  const int lane = threadIdx.x;
  const unsigned mask = lane == 3 ? 0x3u : kFullMask;
  out[lane] = __shfl_sync(mask, float(lane), 0);
}

__global__ void partial_warp_kernel(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(kFullMask, float(threadIdx.x), 1);
}

__global__ void deadlock_kernel(float* out) {
  if (threadIdx.x == 0) out[0] = __shfl_sync(0x3u, 1.0f, 1);  // lane 1 is at the barrier instead
  __syncthreads();
}

template <class T> DeviceBuffer<T> filled(size_t n, T v) { return DeviceBuffer<T>(std::vector<T>(n, v)); }

}  // namespace

std::vector<float> neighbour_exchange(const std::vector<float>& in, bool with_barrier) {
  DeviceBuffer<float> din(in), dout(in.size());
  SY_LAUNCH(1, unsigned(in.size()), 0, nullptr, neighbour_kernel)(din.get(), dout.get(), int(in.size()), int(with_barrier));
  SY_CUDA_CHECK(cudaGetLastError());
  return dout.download();
}

std::vector<float> float_gated_barrier(float gate) {
  DeviceBuffer<float> dout(64);
  SY_LAUNCH(1, 64, 0, nullptr, float_gated_kernel)(dout.get(), gate);
  SY_CUDA_CHECK(cudaGetLastError());
  return dout.download();
}

std::vector<float> two_block_sums(const std::vector<float>& in, bool trailing_barrier) {
  // out[0], out[1] hold the exact sums (in holds small integers), out[2] whether any thread disagreed.
  double a = 0;
  for (float x : in) a += x;
  DeviceBuffer<float> din(in), dout(std::vector<float>{float(a), float(2 * a), -1.0f});
  SY_LAUNCH(1, unsigned(in.size()), 0, nullptr, two_sums_kernel)(din.get(), dout.get(), int(trailing_barrier));
  SY_CUDA_CHECK(cudaGetLastError());
  return dout.download();
}

std::vector<float> shuffle(int threads, int kind, int param, int width) {
  DeviceBuffer<float> out{size_t(threads)};
  SY_LAUNCH(1, unsigned(threads), 0, nullptr, shuffle_kernel)(out.get(), kind, param, width);
  SY_CUDA_CHECK(cudaGetLastError());
  return out.download();
}

std::vector<double> shuffle_xor_f64(int threads, int lane_mask) {
  DeviceBuffer<double> out{size_t(threads) * 2};
  SY_LAUNCH(1, unsigned(threads), 0, nullptr, shuffle_f64_kernel)(out.get(), lane_mask);
  SY_CUDA_CHECK(cudaGetLastError());
  return out.download();
}

std::vector<uint32_t> votes(const std::vector<int>& pred, bool split_mask) {
  DeviceBuffer<int> dp(pred);
  DeviceBuffer<uint32_t> out(96);
  SY_LAUNCH(1, 32, 0, nullptr, vote_kernel)(dp.get(), out.get(), int(split_mask));
  SY_CUDA_CHECK(cudaGetLastError());
  return out.download();
}

std::vector<double> atomics(int blocks, int threads) {
  auto isum = filled<int>(1, 0), imax = filled<int>(1, -1);
  auto fsum = filled<float>(1, 0.0f);
  auto dsum = filled<double>(1, 0.0);
  SY_LAUNCH(unsigned(blocks), unsigned(threads), 0, nullptr, atomics_kernel)(isum.get(), fsum.get(), imax.get(), dsum.get());
  SY_CUDA_CHECK(cudaGetLastError());
  return {double(isum.download()[0]), double(fsum.download()[0]), double(imax.download()[0]), dsum.download()[0]};
}

std::vector<float> reverse_blocks(const std::vector<float>& in, int threads, std::vector<int>* poisoned) {
  const int blocks = int(in.size()) / threads;
  DeviceBuffer<float> din(in), dout(in.size());
  DeviceBuffer<int> dpoison{size_t(blocks)};
  SY_LAUNCH(unsigned(blocks), unsigned(threads), size_t(threads) * sizeof(float), nullptr, reverse_kernel)(
      din.get(), dout.get(), dpoison.get());
  SY_CUDA_CHECK(cudaGetLastError());
  *poisoned = dpoison.download();
  return dout.download();
}

std::vector<int32_t> coordinates(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by) {
  DeviceBuffer<int32_t> out{size_t(gx) * gy * gz * bx * by * 5};
  SY_LAUNCH(dim3(gx, gy, gz), dim3(bx, by), 0, nullptr, coordinate_kernel)(out.get());
  SY_CUDA_CHECK(cudaGetLastError());
  return out.download();
}

void divergent_barrier() {
  DeviceBuffer<float> out(64);
  SY_LAUNCH(1, 64, 0, nullptr, divergent_barrier_kernel)(out.get());
}
void mask_excludes_caller() {
  DeviceBuffer<float> out(32);
  SY_LAUNCH(1, 32, 0, nullptr, bad_mask_kernel)(out.get());
}
void partial_warp_full_mask() {
  DeviceBuffer<float> out(48);
  SY_LAUNCH(1, 48, 0, nullptr, partial_warp_kernel)(out.get());
}
void empty_grid() {
  DeviceBuffer<float> out(32);
  SY_LAUNCH(0, 32, 0, nullptr, partial_warp_kernel)(out.get());
  SY_CUDA_CHECK(cudaGetLastError());
}
void warp_deadlock() {
  DeviceBuffer<float> out(32);
  SY_LAUNCH(1, 32, 0, nullptr, deadlock_kernel)(out.get());
}

}  // namespace sy::cuda::emutest
