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

void mix_rows(const std::uint32_t* offsets, const node_id* columns, const float* weights, node_id n,
              std::size_t block, const float* x, float* y) {
  for (node_id i = 0; i < n; ++i) {
    float* __restrict out = y + static_cast<std::size_t>(i) * block;
    const std::uint32_t begin = offsets[i], end = offsets[i + 1];
    {
      const float a = weights[begin];
      const float* __restrict src = x + static_cast<std::size_t>(columns[begin]) * block;
      for (std::size_t c = 0; c < block; ++c)
        out[c] = a * src[c];
    }
    for (std::uint32_t k = begin + 1; k < end; ++k) {
      const float a = weights[k];
      const float* __restrict src = x + static_cast<std::size_t>(columns[k]) * block;
      for (std::size_t c = 0; c < block; ++c)
        out[c] = std::fma(a, src[c], out[c]);
    }
  }
}

}  // namespace

batched_kernel MWS_SIM_KERNEL_ENTRY() noexcept {
  return {MWS_SIM_KERNEL_ISA, &mix_rows};
}

}  // namespace mws::sim::detail
