// The batched mixing loop, compiled twice (baseline and x86-64-v3 with FMA) like gpu/'s CPU
// kernels; std::fma is exact in both, so both builds give identical bits.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "simulations/batched.hpp"

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

void mix_rows(const std::uint32_t* offsets, const node_id* columns, const float* weights, node_id n,
              std::size_t block, const float* x, float* y) {
  for (node_id i = 0; i < n; ++i) {
    float* __restrict out = y + static_cast<std::size_t>(i) * block;
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
      for (std::size_t l = 0; l < lanes; ++l)
        out[c + l] = acc[l];
    }
    for (; c < block; ++c) {
      float acc = a0 * src0[c];
      for (std::uint32_t k = begin + 1; k < end; ++k)
        acc = std::fma(weights[k], x[static_cast<std::size_t>(columns[k]) * block + c], acc);
      out[c] = acc;
    }
  }
}

}  // namespace

batched_kernel MWS_SIM_KERNEL_ENTRY() noexcept {
  return {MWS_SIM_KERNEL_ISA, &mix_rows};
}

}  // namespace mws::sim::detail
