// Storage types of model tensors and the scalar conversions between them.
//
// Tensors are stored as f32, f16 (IEEE binary16) or bf16 (bfloat16); every arithmetic operation
// widens to f32 and rounds back to the storage type with round-to-nearest-even. The scalar
// conversions here (their bit logic in gpu/detail/half_bits.hpp, shared with the CUDA kernels) are
// the reference that the vectorised CPU kernels and the CUDA kernels reproduce bit for bit.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "gpu/detail/half_bits.hpp"

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
  return detail::bf16_from_f32_bits(std::bit_cast<std::uint32_t>(f));
}

inline float bf16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(detail::f32_bits_from_bf16(h));
}

// IEEE binary16. Rounds to nearest even, overflows to infinity, keeps subnormals; NaN stays NaN.
inline std::uint16_t f32_to_f16(float f) noexcept {
  return detail::f16_from_f32_bits(std::bit_cast<std::uint32_t>(f));
}

inline float f16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(detail::f32_bits_from_f16(h));
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
