// The CPU backend's loops, compiled once per instruction-set level and chosen at start-up.
//
// cpu_kernels.cpp is compiled twice: for baseline x86-64 (or whatever the target is) and, on
// x86-64, for x86-64-v3 (AVX2, FMA, F16C). Both produce bit-identical results: element-wise
// operations round exactly as gpu/backend.hpp specifies, and reductions use the same eight f64
// lanes combined in the same order whatever the vector width.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "gpu/backend.hpp"

namespace mws::gpu::detail {

struct cpu_kernels {
  const char* isa;
  // out[i] = a[0]*x[0][i] (+ fma a[j]*x[j][i] for j = 1..k-1), all of dtype t.
  void (*weighted_sum)(dtype t, void* out, const void* const* x, const float* a, std::size_t k,
                       std::size_t n);
  void (*axpy)(dtype t, float a, const void* x, void* y, std::size_t n);
  void (*scale)(dtype t, float a, void* x, std::size_t n);
  void (*convert)(dtype to, void* dst, dtype from, const void* src, std::size_t n);
  double (*reduce)(reduction op, dtype t, const void* x, const void* y, std::size_t n);
  // y row i = weighted_sum over row i's (columns[k], weights[k]) of x rows; rows of `width`
  // f32 values; CSR checked by check_sparse_rows. Unlike the others it streams its output past
  // the caches whatever its size (where y is 32-byte aligned and width a multiple of 8): its
  // caller, the simulator, streams blocks of X through memory and reads none of them back soon.
  void (*mix_rows)(const std::uint32_t* offsets, const std::uint32_t* columns, const float* weights,
                   std::uint32_t n, std::size_t width, const float* x, float* y);
};

// Writes at least this many output bytes bypass the cache (non-temporal stores), because the
// result will not be read again before it is evicted anyway.
inline constexpr std::size_t streaming_store_bytes_min = std::size_t{1} << 20;

const cpu_kernels& cpu_kernels_baseline() noexcept;
#if defined(MWS_HAVE_X86_64_V3)
const cpu_kernels& cpu_kernels_x86_64_v3() noexcept;
#endif

// The fastest table this CPU runs; `why` says which and why.
const cpu_kernels& select_cpu_kernels(std::string& why) noexcept;

}  // namespace mws::gpu::detail
