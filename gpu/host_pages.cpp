#include "gpu/host_pages.hpp"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mws::gpu {

void advise_huge_pages([[maybe_unused]] void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < huge_page_advice_bytes) return;
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const auto first = (begin + huge - 1) & ~(huge - 1);
  const auto last = (begin + bytes) & ~(huge - 1);
  // Advice only: a kernel without THP answers EINVAL, and the buffer works the same.
  if (last > first) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

}  // namespace mws::gpu
