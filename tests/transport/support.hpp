// Helpers for the transport tests: run a coroutine on a fresh io_context with a bound on the
// number of polls (no test waits on wall-clock speed; the bound only turns a hang into a failure).
#pragma once

#include <chrono>
#include <exception>
#include <filesystem>
#include <random>
#include <string>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

namespace mws::transport::test {

// Runs `body` (a callable returning awaitable<void>) until it finishes; fails the test if it
// has not finished within `limit` (a guard against hangs, not a measurement).
template <class Body>
void run(boost::asio::io_context& io, Body body,
         std::chrono::milliseconds limit = std::chrono::milliseconds(60'000)) {
  bool done = false;
  std::exception_ptr failure;
  boost::asio::co_spawn(io, body(), [&](std::exception_ptr e) {
    failure = e;
    done = true;
  });
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < give_up) {
    io.run_one_for(std::chrono::milliseconds(50));
    if (io.stopped()) io.restart();
  }
  REQUIRE_MESSAGE(done, "the test coroutine did not finish");
  if (failure) std::rethrow_exception(failure);
}

// A fresh directory under the system temp dir, removed at scope exit.
class temp_dir {
 public:
  temp_dir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("mws-transport-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace mws::transport::test
