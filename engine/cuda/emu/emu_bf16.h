// __nv_bfloat16 for the host emulator: the storage, the conversions and their rounding exactly as
// CUDA's cuda_bf16.h defines them (float -> bf16 rounds to nearest, ties to even; NaN becomes the
// canonical quiet NaN 0x7fff), so a kernel's bf16 results under the emulator are the bits the GPU
// writes for the same float values.
//
// Only what kernels of this project use is here: kernels convert to float with __bfloat162float,
// compute in float and convert back with __float2bfloat16; they never do arithmetic on bf16.
#pragma once

#include <cstdint>

#include "engine/bf16_bits.h"

namespace syemu {
using sy::bf16_bits_to_f32;  // the conversions themselves: engine/bf16_bits.h
using sy::f32_to_bf16_bits;
}  // namespace syemu

struct __nv_bfloat16 {
  uint16_t __x;  // the bits, as CUDA names its storage member
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(float f) : __x(syemu::f32_to_bf16_bits(f)) {}
  constexpr operator float() const { return syemu::bf16_bits_to_f32(__x); }
};

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return syemu::bf16_bits_to_f32(b.__x); }
