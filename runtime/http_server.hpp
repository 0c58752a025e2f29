// A small HTTP/1.1 server for a node's operational endpoints (/metrics, /livez, /readyz,
// /status), on Boost.Beast, running on the node's event loop.
//
// Only GET and HEAD; no request bodies. Everything is bounded: header bytes, connections,
// requests per connection, and the time a client may take. Anything else gets a plain error
// status and the connection is closed; a misbehaving client never disturbs the others.
//
// Threading: all calls on the executor's thread (the node's loop). Handlers run there too and
// must not block.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/result.hpp>

namespace mws::runtime {

// An open file, owned: closed when the last reference goes.
class http_file {
 public:
  explicit http_file(int fd) noexcept : fd_(fd) {}
  ~http_file();
  http_file(const http_file&) = delete;
  http_file& operator=(const http_file&) = delete;
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

struct http_response {
  http_response(unsigned s, std::string type, std::string text)
      : status(s), content_type(std::move(type)), body(std::move(text)) {}
  http_response(unsigned s, std::string type, std::shared_ptr<http_file> f)
      : status(s), content_type(std::move(type)), file(std::move(f)) {}

  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // When set, the body is this file's contents from its start instead of `body`: a large
  // answer (a whole model: /export) is streamed from the file rather than held in memory.
  std::shared_ptr<http_file> file;
};

using http_handler = std::function<http_response()>;

struct http_limits {
  std::size_t connections_max = 32;
  std::size_t header_bytes_max = 8 * 1024;
  std::size_t requests_per_connection_max = 100;
  std::chrono::milliseconds request_timeout{5000};     // to receive a request
  std::chrono::milliseconds response_timeout{60'000};  // to send a response
};

class http_server {
 public:
  http_server(boost::asio::any_io_executor executor, http_limits limits = {});
  ~http_server();  // stops accepting and closes open connections
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Serves `path` (exact match, query string ignored) with `handler`.
  void route(std::string path, http_handler handler);

  // Binds and starts accepting. Returns the bound endpoint (port 0 picks a free port), or the
  // error (address in use, permission denied, ...).
  boost::system::result<boost::asio::ip::tcp::endpoint> listen(
      const boost::asio::ip::tcp::endpoint& where);

  void stop();

  std::size_t open_connections() const noexcept;

  struct state;  // implementation detail, shared with the connection coroutines

 private:
  std::shared_ptr<state> state_;  // shared with the coroutines, which may outlive a stop()
};

}  // namespace mws::runtime
