#include "gpu/detail/cpu_kernels.hpp"

#if defined(MWS_HAVE_X86_64_V3)
#include <cpuid.h>
#endif

namespace mws::gpu::detail {
namespace {

#if defined(MWS_HAVE_X86_64_V3)
// F16C straight from CPUID (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports does not know
// "f16c". AVX2 and FMA checks also cover the operating system's saving of the AVX registers.
bool has_f16c() noexcept {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}
#endif

}  // namespace

const cpu_kernels& select_cpu_kernels(std::string& why) noexcept {
#if defined(MWS_HAVE_X86_64_V3)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()) {
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
