// The batched mixing loop, compiled twice (baseline and x86-64-v3 with FMA) like gpu/'s CPU
// kernels; std::fma is exact in both, so both builds give identical bits.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "simulations/batched.hpp"

#if defined(MWS_SIM_KERNEL_V3)
#include <immintrin.h>
#endif

namespace mws::sim::detail {

#if defined(MWS_SIM_KERNEL_V3)
#define MWS_SIM_KERNEL_ENTRY batched_kernel_x86_64_v3
#define MWS_SIM_KERNEL_ISA "x86-64-v3 (AVX2, FMA)"
#else
#define MWS_SIM_KERNEL_ENTRY batched_kernel_baseline
#define MWS_SIM_KERNEL_ISA "baseline"
#endif

namespace {

// Register-blocked: a chunk of `lanes` outputs stays in registers while every term of the row
// is folded in, so each output is stored once (a loop per term would load and store the output
// once per term). The order of operations per element is the same as term by term.
constexpr std::size_t lanes = 16;
// How far ahead the rows that a row will read first are prefetched: the rows a round touches for
// the first time are the largest columns of the rows to come, an irregular pattern that the
// hardware prefetchers follow late. 1-4 KiB measured alike on a 2-core EPYC; 2 KiB is used.
constexpr std::size_t prefetch_bytes = 2048;

// Stores a finished chunk. The v3 build writes it past the caches when `out` is 32-byte aligned:
// the output is not read again this round, so a normal store would only fetch the line first
// and push the block's inputs out of cache.
inline void store_chunk(float* out, const float* acc, [[maybe_unused]] bool streaming) {
#if defined(MWS_SIM_KERNEL_V3)
  if (streaming) {
    for (std::size_t l = 0; l < lanes; l += 8)
      _mm256_stream_ps(out + l, _mm256_loadu_ps(acc + l));
    return;
  }
#endif
  for (std::size_t l = 0; l < lanes; ++l)
    out[l] = acc[l];
}

void mix_rows(const std::uint32_t* offsets, const node_id* columns, const float* weights, node_id n,
              std::size_t block, const float* x, float* y) {
  const bool streaming = reinterpret_cast<std::uintptr_t>(y) % 32 == 0 && block % 8 == 0;
  const auto ahead =
      static_cast<node_id>(std::max<std::size_t>(2, prefetch_bytes / (block * sizeof(float))));
  for (node_id i = 0; i < n; ++i) {
    float* __restrict out = y + static_cast<std::size_t>(i) * block;
    if (i + ahead < n) {
      const node_id last = columns[offsets[i + ahead + 1] - 1];  // columns ascend within a row
      const float* next = x + static_cast<std::size_t>(last) * block;
      for (std::size_t c = 0; c < block; c += 64 / sizeof(float))
        __builtin_prefetch(next + c);
    }
    const std::uint32_t begin = offsets[i], end = offsets[i + 1];
    const float a0 = weights[begin];
    const float* __restrict src0 = x + static_cast<std::size_t>(columns[begin]) * block;
    std::size_t c = 0;
    for (; c + lanes <= block; c += lanes) {
      float acc[lanes];
      for (std::size_t l = 0; l < lanes; ++l)
        acc[l] = a0 * src0[c + l];
      for (std::uint32_t k = begin + 1; k < end; ++k) {
        const float a = weights[k];
        const float* __restrict src = x + static_cast<std::size_t>(columns[k]) * block + c;
        for (std::size_t l = 0; l < lanes; ++l)
          acc[l] = std::fma(a, src[l], acc[l]);
      }
      store_chunk(out + c, acc, streaming);
    }
    for (; c < block; ++c) {
      float acc = a0 * src0[c];
      for (std::uint32_t k = begin + 1; k < end; ++k)
        acc = std::fma(weights[k], x[static_cast<std::size_t>(columns[k]) * block + c], acc);
      out[c] = acc;
    }
  }
#if defined(MWS_SIM_KERNEL_V3)
  if (streaming) _mm_sfence();
#endif
}

}  // namespace

batched_kernel MWS_SIM_KERNEL_ENTRY() noexcept {
  return {MWS_SIM_KERNEL_ISA, &mix_rows};
}

}  // namespace mws::sim::detail
