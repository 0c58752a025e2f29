// Huge pages for model-sized host buffers.
//
// A fresh model-sized buffer costs a page fault per 4 KiB page on first touch (10,000 for a 40 MB
// share): profiling a push-sum mesh put a quarter of a node's CPU time in those faults. With
// transparent huge pages the kernel backs each aligned 2 MiB of the buffer with one page and
// one fault; 4 loopback nodes moved shares 1.3-1.7x faster per CPU second. Where THP is off, or
// on systems other than Linux, the advice is ignored and nothing changes.
#pragma once

#include <cstddef>

namespace mws::gpu {

// Buffers at least this large are advised; smaller ones hold no whole aligned huge page.
inline constexpr std::size_t huge_page_advice_bytes = std::size_t{4} << 20;

// Asks the kernel to back the whole 2 MiB pages inside [p, p + bytes) with huge pages, before the
// memory is first touched. Does nothing for buffers under huge_page_advice_bytes.
void advise_huge_pages(void* p, std::size_t bytes) noexcept;

}  // namespace mws::gpu
