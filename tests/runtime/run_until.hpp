// Runs an io_context until a condition holds, for the tests of real nodes and connections.
#pragma once

#include <chrono>
#include <functional>

#include <boost/asio/io_context.hpp>

namespace mws::runtime::test {

// Runs the loop until `done` holds or 30 s pass (a bound against hangs, not a speed check),
// asking `done` every `period` (longer for a costly `done`, so that asking does not starve the
// loop in a slow build).
inline bool run_until(boost::asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds period = std::chrono::milliseconds(10)) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    io.run_for(period);
    if (io.stopped()) io.restart();
  }
  return true;
}

}  // namespace mws::runtime::test
