// __nv_bfloat16 for the host emulator: the storage, the conversions and their rounding exactly as
// CUDA's cuda_bf16.h defines them (float -> bf16 rounds to nearest, ties to even; NaN becomes the
// canonical quiet NaN 0x7fff), so a kernel's bf16 results under the emulator are the bits the GPU
// writes for the same float values.
//
// Only what kernels of this project use is here: kernels convert to float with __bfloat162float,
// compute in float and convert back with __float2bfloat16; they never do arithmetic on bf16.
#pragma once

#include <bit>
#include <cstdint>

namespace syemu {

constexpr uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN (either sign) -> canonical quiet NaN
  // Round to nearest even: add half an ulp of the result minus one, plus the result's low bit.
  // An overflow out of the largest finite value carries into the exponent and gives inf, as RNE must.
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

constexpr float bf16_bits_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

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
