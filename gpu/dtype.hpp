// Storage types of model tensors and the scalar conversions between them.
//
// Tensors are stored as f32, f16 (IEEE binary16) or bf16 (bfloat16); every arithmetic operation
// widens to f32 and rounds back to the storage type with round-to-nearest-even. The scalar
// conversions here are the reference that the vectorised CPU kernels and the CUDA kernels must
// reproduce bit for bit.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace mws::gpu {

enum class dtype : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2 };

constexpr std::size_t dtype_size(dtype t) noexcept {
  return t == dtype::f32 ? 4 : 2;
}

constexpr std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::f32:
      return "f32";
    case dtype::f16:
      return "f16";
    case dtype::bf16:
      return "bf16";
  }
  return "?";
}

// Accepts the names used by mws ("f32") and by safetensors ("F32").
std::optional<dtype> parse_dtype(std::string_view name) noexcept;

// bfloat16: the upper half of an f32. Rounds to nearest even; NaN stays a (quiet) NaN.
inline std::uint16_t f32_to_bf16(float f) noexcept {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float bf16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

// IEEE binary16. Rounds to nearest even, overflows to infinity, keeps subnormals; NaN stays NaN.
inline std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
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

inline float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  // NaNs come out quiet, as the F16C instruction and CUDA's conversion make them.
  if (exp == 0x1fu)
    return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in f32.
  const float v = static_cast<float>(mant) * 0x1p-24f;
  return sign ? -v : v;
}

// Element k of host data of type t, as f32 (exact: every f16 and bf16 value is an f32). The data
// need not be aligned (a safetensors file packs tensors back to back).
inline float load_as_f32(const void* data, dtype t, std::size_t k) noexcept {
  const auto* p = static_cast<const unsigned char*>(data) + k * dtype_size(t);
  if (t == dtype::f32) {
    float v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return t == dtype::f16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Element k of host data of type t := v, rounded to nearest even; unaligned data is fine.
inline void store_from_f32(void* data, dtype t, std::size_t k, float v) noexcept {
  auto* p = static_cast<unsigned char*>(data) + k * dtype_size(t);
  if (t == dtype::f32) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
  const std::uint16_t h = t == dtype::f16 ? f32_to_f16(v) : f32_to_bf16(v);
  std::memcpy(p, &h, sizeof h);
}

}  // namespace mws::gpu
