// Accepts TCP peers (IPv4 or IPv6) and turns each into an authenticated connection.
//
// Order of checks for each accepted socket, cheapest first: connection caps (total, per source
// address), the per-address handshake rate limit (token bucket), then the handshake with its
// deadline. A refused peer is closed and reported to on_refused with the specific error; the
// accept loop goes on serving everyone else. Every table is bounded: the rate-limit table holds
// at most rate_table_max addresses (the stalest is dropped when full).
//
// Threading: construct, run() and stop() on the executor's thread. Handshakes run as their own
// coroutines, so one slow or hostile peer never delays another. The listener must outlive
// run(); connections handed out do not depend on it (their cap slots are released whenever
// they close, even after the listener is gone).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/result.hpp>

#include "transport/connection.hpp"

namespace mws::transport {

struct listener_config {
  connection_config connection;
  std::size_t connections_max = 256;            // live and handshaking, all addresses
  std::size_t connections_per_address_max = 8;  // live and handshaking, one address
  double handshakes_per_second = 20.0;          // token-bucket refill, per source address
  double handshake_burst = 40.0;                // token-bucket size, per source address
  std::size_t rate_table_max = 4096;
};

struct listener_stats {
  std::uint64_t accepted = 0;   // TCP accepts
  std::uint64_t connected = 0;  // handshakes completed and handed out
  std::uint64_t refused = 0;    // all refusals, each also reported to on_refused
};

class listener {
 public:
  using connection_handler = std::function<void(connection)>;
  using refusal_handler =
      std::function<void(const std::string& address, boost::system::error_code)>;

  // Binds and listens; returns the system error (address in use, ...) on failure.
  static boost::system::result<std::unique_ptr<listener>> open(
      boost::asio::any_io_executor executor, const boost::asio::ip::tcp::endpoint& endpoint,
      const identity& self, listener_config config);

  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener();

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // Accepts until stop(). Handlers are called on the executor's thread.
  boost::asio::awaitable<void> run(connection_handler on_connection, refusal_handler on_refused);
  void stop() noexcept;
  listener_stats stats() const noexcept;

  struct shared_counts;  // live-connection counts and stats, shared with connection slots
  struct serve_context;  // what every handshake coroutine of one run() needs

 private:
  listener(boost::asio::ip::tcp::acceptor acceptor, const identity& self, listener_config config);
  bool take_token(const std::string& address);

  struct bucket {
    double tokens;
    std::chrono::steady_clock::time_point updated;
  };
  boost::asio::ip::tcp::acceptor acceptor_;
  identity self_;
  listener_config config_;
  std::shared_ptr<shared_counts> counts_;
  std::unordered_map<std::string, bucket> buckets_;
};

}  // namespace mws::transport
