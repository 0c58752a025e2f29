// A broadcast wake-up for coroutines on one executor: wait() suspends until notify(). Built on a
// timer that never expires, so a waiting coroutine stays cancellable (awaitable operators, close).
#pragma once

#include <chrono>
#include <cstdint>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mws::transport::detail {

class event {
 public:
  explicit event(const boost::asio::any_io_executor& executor)
      : timer_(executor, std::chrono::steady_clock::time_point::max()) {}

  // Returns {} when notified, operation_aborted when the wait itself was cancelled. Callers
  // re-check their condition in a loop: a notify() wakes every waiter.
  boost::asio::awaitable<boost::system::error_code> wait() {
    const std::uint64_t seen = generation_;
    timer_.expires_at(std::chrono::steady_clock::time_point::max());
    auto [ec] = co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (generation_ != seen) co_return boost::system::error_code{};
    co_return ec ? ec : boost::asio::error::operation_aborted;
  }

  void notify() noexcept {
    ++generation_;
    timer_.cancel();
  }

 private:
  boost::asio::steady_timer timer_;
  std::uint64_t generation_ = 0;
};

// An asynchronous mutex for coroutines of one executor (no threads: a flag and an event).
class async_mutex {
 public:
  explicit async_mutex(const boost::asio::any_io_executor& executor) : released_(executor) {}
  boost::asio::awaitable<boost::system::error_code> lock() {
    while (locked_) {
      if (auto ec = co_await released_.wait()) co_return ec;
    }
    locked_ = true;
    co_return boost::system::error_code{};
  }
  void unlock() noexcept {
    locked_ = false;
    released_.notify();
  }

 private:
  event released_;
  bool locked_ = false;
};

}  // namespace mws::transport::detail
