// An authenticated, encrypted connection to one peer, and the functions that make one.
//
// Threading: everything runs on the executor of the link (one io_context thread per node, the
// caller's). Call the member functions only from coroutines on that executor. A connection
// starts two internal coroutines (frame reader, keepalive) that hold its state alive until the
// link closes; the `connection` handle is move-only and closing it (or destroying the last
// handle) ends them.
//
// Messages: send() writes one message given as a list of spans (say, a small header and then
// the tensor bytes): the transport encrypts straight from those spans into one frame-sized
// buffer, never copying the whole payload. receive() hands back the next piece of a message in
// the caller's buffer, with a flag on the last piece; when the buffer holds a whole frame the
// ciphertext is read into it and decrypted in place (no copy). Flow control: a peer may send
// only `window_bytes` ahead of what our application has consumed; send() waits for credit, so a
// slow reader bounds the bytes buffered on both sides (backpressure, not unbounded queues).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/result.hpp>

#include "transport/handshake.hpp"
#include "transport/identity.hpp"
#include "transport/link.hpp"

namespace mws::transport {

struct connection_config {
  handshake_config handshake;
  std::chrono::milliseconds handshake_timeout{10'000};
  std::chrono::milliseconds keepalive_interval{15'000};  // a ping when nothing was sent for this
  std::chrono::milliseconds idle_timeout{60'000};        // closed when nothing arrived for this
  std::size_t socket_buffer_bytes = 0;                   // 0: kernel autotuning
};

struct connection_stats {
  std::uint64_t frames_sent = 0;
  std::uint64_t frames_received = 0;
  std::uint64_t payload_bytes_sent = 0;
  std::uint64_t payload_bytes_received = 0;
  std::uint64_t send_rekeys = 0;
  std::uint64_t receive_rekeys = 0;
  std::uint64_t credit_waits = 0;          // times send() waited for the peer's window
  std::uint64_t unacknowledged_bytes = 0;  // sent, not yet credited back by the peer
  std::uint64_t buffered_bytes = 0;        // received and decrypted, not yet consumed
  std::uint64_t buffered_bytes_peak = 0;
};

struct received_piece {
  std::size_t bytes = 0;        // written at the start of the caller's buffer
  bool end_of_message = false;  // this piece ends the message
};

class connection;
namespace detail {
class connection_state;
std::shared_ptr<connection_state> state_of(const connection& c) noexcept;  // for listener, tests
}  // namespace detail

class connection {
 public:
  connection() = default;
  explicit connection(std::shared_ptr<detail::connection_state> state) noexcept;
  connection(connection&&) noexcept = default;
  connection& operator=(connection&&) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();  // closes (abruptly if close() was not awaited)

  bool is_open() const noexcept;
  explicit operator bool() const noexcept { return state_ != nullptr; }

  // Sends one message made of `parts`, in order. At most one send() at a time per connection
  // (others wait). Returns the connection's error if it failed or closed.
  boost::asio::awaitable<boost::system::error_code> send(
      std::span<const boost::asio::const_buffer> parts);
  // Receives the next piece of the current message into `into` (non-empty). One receive() at a
  // time. closed_by_peer after a graceful close; the first error otherwise.
  boost::asio::awaitable<boost::system::result<received_piece>> receive(
      boost::asio::mutable_buffer into);
  // Graceful close: waits for a send in progress, sends a close frame, closes the link.
  boost::asio::awaitable<void> close();

  const public_key& remote_key() const noexcept;
  peer_id remote_id() const noexcept { return peer_id::of(remote_key()); }
  aead_kind aead() const noexcept;
  std::string remote_address() const;
  const session_limits& remote_limits() const noexcept;
  connection_stats stats() const noexcept;
  // The error that ended the connection (empty while it is open).
  boost::system::error_code error() const noexcept;

 private:
  friend std::shared_ptr<detail::connection_state> detail::state_of(const connection&) noexcept;
  std::shared_ptr<detail::connection_state> state_;
};

// Runs the initiator's handshake over `l` within config.handshake_timeout.
boost::asio::awaitable<boost::system::result<connection>> handshake_as_initiator(
    std::unique_ptr<link> l, const identity& self, const connection_config& config);
// Runs the responder's handshake over `l` within config.handshake_timeout.
boost::asio::awaitable<boost::system::result<connection>> handshake_as_responder(
    std::unique_ptr<link> l, const identity& self, const connection_config& config);
// Connects by TCP (IPv4 or IPv6) on the current coroutine's executor, then handshakes.
// The TCP connect has its own deadline of config.handshake_timeout.
boost::asio::awaitable<boost::system::result<connection>> dial(
    const boost::asio::ip::tcp::endpoint& endpoint, const identity& self,
    const connection_config& config);

}  // namespace mws::transport
