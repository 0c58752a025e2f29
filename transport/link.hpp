// A byte link under a connection: TCP in production, an in-memory pair in tests. The connection
// code sees only this interface, so every test of the protocol can run on either.
//
// Ownership and threading: a link is owned by one connection (std::unique_ptr) and used only on
// its executor (one io_context thread). At most one read and one write are in flight at a time.
// close() may be called at any time on that executor; it aborts pending operations.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

namespace mws::transport {

class link {
 public:
  virtual ~link() = default;
  virtual boost::asio::any_io_executor get_executor() = 0;
  // Reads exactly buffer.size() bytes. boost::asio::error::eof when the peer closed first.
  virtual boost::asio::awaitable<boost::system::error_code> read(
      boost::asio::mutable_buffer buffer) = 0;
  // Writes every byte of every buffer, in order (one gather write where the link allows).
  virtual boost::asio::awaitable<boost::system::error_code> write(
      std::span<const boost::asio::const_buffer> buffers) = 0;
  virtual void close() noexcept = 0;
  // The peer's address without port ("127.0.0.1", "::1", "memory"): the key of per-address caps.
  virtual std::string remote_address() const = 0;
};

// Wraps a connected socket (sets TCP_NODELAY; socket_buffer_bytes > 0 also sets SO_SNDBUF and
// SO_RCVBUF, 0 keeps the kernel's autotuning).
std::unique_ptr<link> make_tcp_link(boost::asio::ip::tcp::socket socket,
                                    std::size_t socket_buffer_bytes = 0);

}  // namespace mws::transport
