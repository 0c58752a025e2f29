#include "transport/link.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "transport/detail/assert.hpp"
#include "transport/detail/event.hpp"
#include "transport/error.hpp"
#include "transport/memory_link.hpp"

namespace mws::transport {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

class tcp_link final : public link {
 public:
  tcp_link(asio::ip::tcp::socket socket, std::size_t buffer_bytes) : socket_(std::move(socket)) {
    error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    if (buffer_bytes > 0) {
      const int size = static_cast<int>(buffer_bytes);
      socket_.set_option(asio::socket_base::send_buffer_size(size), ignored);
      socket_.set_option(asio::socket_base::receive_buffer_size(size), ignored);
    }
    const auto endpoint = socket_.remote_endpoint(ignored);
    address_ = ignored ? std::string("unknown") : endpoint.address().to_string();
  }
  asio::any_io_executor get_executor() override { return socket_.get_executor(); }
  asio::awaitable<error_code> read(asio::mutable_buffer buffer) override {
    auto [ec, n] = co_await asio::async_read(socket_, buffer, asio::as_tuple(asio::use_awaitable));
    co_return ec;
  }
  asio::awaitable<error_code> write(std::span<const asio::const_buffer> buffers) override {
    auto [ec, n] =
        co_await asio::async_write(socket_, buffers, asio::as_tuple(asio::use_awaitable));
    co_return ec;
  }
  void close() noexcept override {
    error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
  std::string remote_address() const override { return address_; }

 private:
  asio::ip::tcp::socket socket_;
  std::string address_;
};

// One direction of a memory link: a bounded ring of bytes.
struct pipe {
  explicit pipe(const asio::any_io_executor& ex, std::size_t capacity)
      : bytes(capacity), changed(ex) {}
  std::vector<unsigned char> bytes;
  std::size_t head = 0;  // next byte to read
  std::size_t size = 0;  // bytes stored
  bool closed = false;
  detail::event changed;
};

struct memory_pair {
  memory_pair(const asio::any_io_executor& ex, std::size_t capacity, fail_counter* f)
      : a_to_b(ex, capacity), b_to_a(ex, capacity), failures(f) {}
  pipe a_to_b;
  pipe b_to_a;
  fail_counter* failures;
  void close() noexcept {
    a_to_b.closed = b_to_a.closed = true;
    a_to_b.changed.notify();
    b_to_a.changed.notify();
  }
};

class memory_link final : public link {
 public:
  memory_link(asio::any_io_executor ex, std::shared_ptr<memory_pair> pair, bool is_a)
      : executor_(std::move(ex)), pair_(std::move(pair)), is_a_(is_a) {}
  ~memory_link() override { pair_->close(); }
  asio::any_io_executor get_executor() override { return executor_; }

  asio::awaitable<error_code> read(asio::mutable_buffer buffer) override {
    if (auto ec = injected()) co_return ec;
    pipe& in = is_a_ ? pair_->b_to_a : pair_->a_to_b;
    auto* out = static_cast<unsigned char*>(buffer.data());
    std::size_t left = buffer.size();
    while (left > 0) {
      if (in.size == 0) {
        if (in.closed)
          co_return closed_ ? error_code(asio::error::operation_aborted)
                            : error_code(asio::error::eof);
        if (auto ec = co_await in.changed.wait()) co_return ec;
        continue;
      }
      const std::size_t n = std::min({left, in.size, in.bytes.size() - in.head});
      std::memcpy(out, in.bytes.data() + in.head, n);
      in.head = (in.head + n) % in.bytes.size();
      in.size -= n;
      out += n;
      left -= n;
      in.changed.notify();
    }
    co_return error_code{};
  }

  asio::awaitable<error_code> write(std::span<const asio::const_buffer> buffers) override {
    if (auto ec = injected()) co_return ec;
    pipe& dst = is_a_ ? pair_->a_to_b : pair_->b_to_a;
    for (const auto& b : buffers) {
      const auto* from = static_cast<const unsigned char*>(b.data());
      std::size_t left = b.size();
      while (left > 0) {
        if (dst.closed)
          co_return closed_ ? error_code(asio::error::operation_aborted)
                            : error_code(asio::error::broken_pipe);
        if (dst.size == dst.bytes.size()) {
          if (auto ec = co_await dst.changed.wait()) co_return ec;
          continue;
        }
        const std::size_t tail = (dst.head + dst.size) % dst.bytes.size();
        const std::size_t n =
            std::min({left, dst.bytes.size() - dst.size, dst.bytes.size() - tail});
        std::memcpy(dst.bytes.data() + tail, from, n);
        dst.size += n;
        from += n;
        left -= n;
        dst.changed.notify();
      }
    }
    co_return error_code{};
  }

  void close() noexcept override {
    closed_ = true;
    pair_->close();
  }
  std::string remote_address() const override { return "memory"; }

 private:
  error_code injected() {
    if (pair_->failures && pair_->failures->next()) {
      pair_->close();
      return make_error_code(errc::injected_failure);
    }
    return {};
  }
  asio::any_io_executor executor_;
  std::shared_ptr<memory_pair> pair_;
  bool is_a_;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<link> make_tcp_link(asio::ip::tcp::socket socket, std::size_t socket_buffer_bytes) {
  return std::make_unique<tcp_link>(std::move(socket), socket_buffer_bytes);
}

std::pair<std::unique_ptr<link>, std::unique_ptr<link>> make_memory_link_pair(
    asio::any_io_executor executor, std::size_t pipe_bytes, fail_counter* failures) {
  MWS_ASSERT(pipe_bytes > 0);
  auto pair = std::make_shared<memory_pair>(executor, pipe_bytes, failures);
  return {std::make_unique<memory_link>(executor, pair, true),
          std::make_unique<memory_link>(executor, pair, false)};
}

}  // namespace mws::transport
