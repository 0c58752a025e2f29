// An in-memory link pair for tests: two ends joined by two bounded byte pipes, on one executor,
// with failure injection in the style of Beast's fail_count: the Nth read or write (counted
// over both ends) fails with errc::injected_failure and closes the pair, so a test can loop N
// over every failure point of a protocol run.
#pragma once

#include <cstddef>
#include <limits>
#include <memory>
#include <utility>

#include "transport/link.hpp"

namespace mws::transport {

// Counts operations; the operation with index fail_at (0-based) fails. Shared by both ends.
class fail_counter {
 public:
  explicit fail_counter(std::size_t fail_at = std::numeric_limits<std::size_t>::max()) noexcept
      : fail_at_(fail_at) {}
  // True when this operation must fail.
  bool next() noexcept { return operations_++ == fail_at_; }
  std::size_t operations() const noexcept { return operations_; }

 private:
  std::size_t fail_at_;
  std::size_t operations_ = 0;
};

// pipe_bytes bounds what a writer may put ahead of its reader (backpressure, as a socket).
// `failures` may be null; otherwise it must outlive both ends.
std::pair<std::unique_ptr<link>, std::unique_ptr<link>> make_memory_link_pair(
    boost::asio::any_io_executor executor, std::size_t pipe_bytes = 64 * 1024,
    fail_counter* failures = nullptr);

}  // namespace mws::transport
