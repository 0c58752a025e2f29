#include "gpu/detail/cpu_kernels.hpp"

namespace mws::gpu::detail {

const cpu_kernels& select_cpu_kernels(std::string& why) noexcept {
#if defined(MWS_HAVE_X86_64_V3)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    why = "the CPU has AVX2, FMA and F16C";
    return cpu_kernels_x86_64_v3();
  }
  why = "the CPU lacks AVX2, FMA or F16C";
#else
  why = "this build has no vectorised x86-64 kernels";
#endif
  return cpu_kernels_baseline();
}

}  // namespace mws::gpu::detail
