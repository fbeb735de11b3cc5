// AdamW on float master weights and moments, and the sum of squares behind the global grad norm.
#include <cmath>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/kernels/kernel_common.cuh"
#include "engine/cuda/kernels/kernels.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

constexpr int kThreads = 256;
// The sum of squares always uses this many partial sums (fewer for small inputs), so its result
// is the same bits on every GPU and every run. 16 under the emulator, where a reduction costs a
// fiber switch per thread at each barrier and shuffle: 4096 threads instead of 262,144 make a
// whole-model training step there twice as fast.
constexpr int kSumBlocks = SY_CUDA_EMULATED ? 16 : 1024;

template <class G>
__global__ void adamw_kernel(float* param, const G* grad, float* m, float* v, __nv_bfloat16* param_copy, int64_t n,
                             AdamWParams a) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    // fmaf where a product meets a sum: nvcc would contract them anyway, and spelling it out
    // gives the emulator's build the same roundings as the GPU's.
    const float g = a.grad_scale * to_f32(grad[i]);
    const float mi = fmaf(a.beta1, m[i], a.one_minus_beta1 * g);
    const float vi = fmaf(a.beta2, v[i], a.one_minus_beta2 * g * g);
    m[i] = mi;
    v[i] = vi;
    const float p = param[i] - a.lr * (a.weight_decay * param[i] + (mi * a.inv_bias1) / (sqrtf(vi * a.inv_bias2) + a.eps));
    param[i] = p;
    if (param_copy) param_copy[i] = __float2bfloat16(p);
  }
}

// Per-block sums of x^2 in double (a grid-stride loop, then the block's tree).
template <class T> __global__ void __launch_bounds__(kThreads) sumsq_kernel(const T* x, int64_t n, double* part) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = to_f32(x[i]);
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kThreads) sum_parts_kernel(const double* part, int parts, double* out) {
  double s = 0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = s;
}

}  // namespace

AdamWParams AdamWParams::make(double lr, double beta1, double beta2, double eps, double weight_decay,
                              double grad_scale, int64_t step) {
  return AdamWParams{float(lr),
                     float(beta1),
                     float(beta2),
                     float(eps),
                     float(weight_decay),
                     float(grad_scale),
                     float(1 - beta1),
                     float(1 - beta2),
                     float(1 / (1 - std::pow(beta1, double(step)))),
                     float(1 / (1 - std::pow(beta2, double(step))))};
}

template <class G>
void adamw_update(float* param, const G* grad, float* m, float* v, __nv_bfloat16* param_copy, int64_t n,
                  const AdamWParams& a, cudaStream_t s) {
  if (n == 0) return;
  SY_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, adamw_kernel<G>)(param, grad, m, v, param_copy, n, a);
  SY_CUDA_CHECK(cudaGetLastError());
}

size_t sum_squares_scratch() { return kSumBlocks; }

template <class T> void sum_squares(const T* x, int64_t n, double* out, double* scratch, cudaStream_t s) {
  const unsigned blocks = grid_for(n, kThreads, kSumBlocks);
  if (n > 0) {
    SY_LAUNCH(blocks, kThreads, 0, s, sumsq_kernel<T>)(x, n, scratch);
    SY_CUDA_CHECK(cudaGetLastError());
  }
  // With n == 0 the one partial is zero.
  if (n == 0) SY_CUDA_CHECK(cudaMemsetAsync(scratch, 0, sizeof(double), s));
  SY_LAUNCH(1, kThreads, 0, s, sum_parts_kernel)(scratch, int(blocks), out);
  SY_CUDA_CHECK(cudaGetLastError());
}

template void adamw_update<float>(float*, const float*, float*, float*, __nv_bfloat16*, int64_t, const AdamWParams&,
                                  cudaStream_t);
template void adamw_update<__nv_bfloat16>(float*, const __nv_bfloat16*, float*, float*, __nv_bfloat16*, int64_t,
                                          const AdamWParams&, cudaStream_t);
template void sum_squares<float>(const float*, int64_t, double*, double*, cudaStream_t);
template void sum_squares<__nv_bfloat16>(const __nv_bfloat16*, int64_t, double*, double*, cudaStream_t);

SY_CUDA_NS_END
}  // namespace sy::cuda
