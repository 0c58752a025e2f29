// The bit logic of the 16-bit storage types, written once for the host (gpu/dtype.hpp) and for
// the CUDA kernels (gpu/cuda/kernels.cu). The functions map bit patterns to bit patterns, so
// neither side needs the other's bit casts. Round to nearest even; NaN stays a quiet NaN.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MWS_HOST_DEVICE __host__ __device__
#else
#define MWS_HOST_DEVICE
#endif

namespace mws::gpu::detail {

// bfloat16: the upper half of an f32.
MWS_HOST_DEVICE constexpr std::uint16_t bf16_from_f32_bits(std::uint32_t u) noexcept {
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

MWS_HOST_DEVICE constexpr std::uint32_t f32_bits_from_bf16(std::uint16_t h) noexcept {
  return static_cast<std::uint32_t>(h) << 16;
}

// IEEE binary16: overflows to infinity, keeps subnormals.
MWS_HOST_DEVICE constexpr std::uint16_t f16_from_f32_bits(std::uint32_t u) noexcept {
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
  if (abs < 0x38800000u) {  // below the smallest normal f16 (2^-14): subnormal or zero
    if (abs < 0x33000000u)
      return static_cast<std::uint16_t>(sign);  // below half the least subnormal
    const std::uint32_t exp = abs >> 23;
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exp;  // 14..24
    std::uint32_t half = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1u);
    const std::uint32_t mid = 1u << (shift - 1u);
    if (rest > mid || (rest == mid && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t r = abs - 0x38000000u;  // rebias the exponent from 127 to 15
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

// Exact: every f16 value is an f32. NaNs come out quiet, as F16C and CUDA make them.
MWS_HOST_DEVICE constexpr std::uint32_t f32_bits_from_f16(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u);
  if (exp != 0) return sign | ((exp + 112u) << 23) | (mant << 13);
  if (mant == 0) return sign;
  // Subnormal, mant * 2^-24: shift the leading one up to bit 10, lowering the exponent from
  // 2^-14's (f32 field 113) once per shift.
  std::uint32_t e = 113u, m = mant;
  while ((m & 0x400u) == 0) {
    m <<= 1;
    --e;
  }
  return sign | (e << 23) | ((m & 0x3ffu) << 13);
}

}  // namespace mws::gpu::detail

#undef MWS_HOST_DEVICE
