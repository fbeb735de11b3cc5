// bfloat16 as its 16 bits, and float32 to and from it exactly as CUDA's cuda_bf16.h defines:
// widening is exact; narrowing rounds to nearest, ties to even, and any NaN becomes the canonical
// quiet NaN 0x7fff. The one copy of these conversions: the engine's host code (engine/tensor.h),
// checkpoint I/O and the CUDA emulator's __nv_bfloat16 (engine/cuda/emu/emu_bf16.h) all use it.
#pragma once

#include <bit>
#include <cstdint>

namespace sy {

constexpr uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN (either sign) -> canonical quiet NaN
  // Round to nearest even: add half an ulp of the result minus one, plus the result's low bit.
  // An overflow out of the largest finite value carries into the exponent and gives inf, as RNE must.
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

constexpr float bf16_bits_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

}  // namespace sy
