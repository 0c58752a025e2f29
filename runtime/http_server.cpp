#include "runtime/http_server.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace mws::runtime {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using tuple_awaitable = asio::as_tuple_t<asio::use_awaitable_t<>>;
constexpr tuple_awaitable use_tuple{};

struct http_server::state {
  asio::any_io_executor executor;
  http_limits limits;
  std::map<std::string, http_handler, std::less<>> routes;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::size_t connections = 0;
  bool stopped = false;
  // Sockets of open connections, so stop() can close them.
  std::map<std::uint64_t, beast::tcp_stream*> open;
  std::uint64_t next_id = 0;
};

namespace {

template <class Body>
void set_headers(http::response<Body>& res, const http_response& r, bool keep_alive) {
  res.set(http::field::server, "mws");
  res.set(http::field::content_type, r.content_type);
  res.keep_alive(keep_alive);
}

http::response<http::string_body> make_response(http_response r, unsigned version, bool keep_alive,
                                                bool head) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  set_headers(res, r, keep_alive);
  res.body() = std::move(r.body);
  res.prepare_payload();
  if (head) res.body().clear();  // HEAD: same headers (Content-Length included), no body
  return res;
}

// Writes a response whose body is r.file (HEAD: its headers only). An error ends the connection.
asio::awaitable<beast::error_code> write_file_response(beast::tcp_stream& stream, http_response r,
                                                       unsigned version, bool keep_alive,
                                                       bool head) {
  http::response<http::file_body> res{static_cast<http::status>(r.status), version};
  set_headers(res, r, keep_alive);
  beast::file file;
  file.native_handle(r.file->release());  // now the body's to close
  beast::error_code ec;
  file.seek(0, ec);
  if (!ec) res.body().reset(std::move(file), ec);
  if (ec) {
    auto failed = make_response({500, "text/plain; charset=utf-8", ec.message() + "\n"}, version,
                                false, head);
    co_await http::async_write(stream, failed, use_tuple);
    co_return ec;  // the connection closes, as the answer said
  }
  res.prepare_payload();
  http::response_serializer<http::file_body> sr(res);
  if (head) co_return std::get<0>(co_await http::async_write_header(stream, sr, use_tuple));
  co_return std::get<0>(co_await http::async_write(stream, sr, use_tuple));
}

// The status that answers a failed read, or 0 when the client is gone and nothing is sent.
unsigned status_for(const beast::error_code& ec) {
  if (ec == http::error::header_limit) return 431;
  if (ec == http::error::body_limit) return 413;
  const bool parse_error =
      ec.category() == http::make_error_code(http::error::bad_target).category();
  if (parse_error && ec != http::error::end_of_stream && ec != http::error::partial_message)
    return 400;
  return 0;
}

http_response dispatch(const http_server::state& s, const http::request<http::empty_body>& req) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    return {405, "text/plain; charset=utf-8", "only GET and HEAD\n"};
  }
  std::string_view target = req.target();
  target = target.substr(0, target.find('?'));
  auto it = s.routes.find(target);
  if (it == s.routes.end()) return {404, "text/plain; charset=utf-8", "not found\n"};
  return it->second();
}

asio::awaitable<void> serve(std::shared_ptr<http_server::state> s, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  const std::uint64_t id = s->next_id++;
  s->open[id] = &stream;
  ++s->connections;
  beast::flat_buffer buffer(s->limits.header_bytes_max + 1);
  for (std::size_t n = 0; n < s->limits.requests_per_connection_max && !s->stopped; ++n) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(s->limits.header_bytes_max));
    parser.body_limit(0);
    stream.expires_after(s->limits.request_timeout);
    auto [ec, bytes] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (ec) {
      // A malformed or oversized request gets a status before the close; a timeout or a
      // vanished client gets nothing.
      if (const unsigned status = status_for(ec)) {
        auto res = make_response({status, "text/plain; charset=utf-8", ec.message() + "\n"}, 11,
                                 false, false);
        co_await http::async_write(stream, res, use_tuple);
      }
      break;
    }
    const auto& req = parser.get();
    const bool keep_alive = req.keep_alive() && n + 1 < s->limits.requests_per_connection_max;
    const bool head = req.method() == http::verb::head;
    auto answer = dispatch(*s, req);
    stream.expires_after(s->limits.response_timeout);  // a large /export takes a while
    beast::error_code wec;
    if (answer.file) {
      wec =
          co_await write_file_response(stream, std::move(answer), req.version(), keep_alive, head);
    } else {
      auto res = make_response(std::move(answer), req.version(), keep_alive, head);
      wec = std::get<0>(co_await http::async_write(stream, res, use_tuple));
    }
    if (wec || !keep_alive) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  s->open.erase(id);
  --s->connections;
}

asio::awaitable<void> accept_loop(std::shared_ptr<http_server::state> s) {
  while (!s->stopped && s->acceptor) {
    auto [ec, socket] = co_await s->acceptor->async_accept(use_tuple);
    if (ec == asio::error::operation_aborted || s->stopped) break;
    if (ec) continue;  // e.g. too many open files: keep serving what we can
    if (s->connections >= s->limits.connections_max) {
      beast::error_code ignored;
      socket.close(ignored);  // at the cap: refuse rather than queue
      continue;
    }
    asio::co_spawn(s->executor, serve(s, std::move(socket)), asio::detached);
  }
}

}  // namespace

http_file::~http_file() {
  if (fd_ >= 0) ::close(fd_);
}

http_server::http_server(asio::any_io_executor executor, http_limits limits)
    : state_(std::make_shared<state>()) {
  state_->executor = std::move(executor);
  state_->limits = limits;
}

http_server::~http_server() {
  stop();
}

void http_server::route(std::string path, http_handler handler) {
  state_->routes[std::move(path)] = std::move(handler);
}

boost::system::result<tcp::endpoint> http_server::listen(const tcp::endpoint& where) {
  auto acceptor = std::make_unique<tcp::acceptor>(state_->executor);
  boost::system::error_code ec;
  acceptor->open(where.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(where, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return ec;
  const tcp::endpoint bound = acceptor->local_endpoint(ec);
  if (ec) return ec;
  state_->acceptor = std::move(acceptor);
  asio::co_spawn(state_->executor, accept_loop(state_), asio::detached);
  return bound;
}

void http_server::stop() {
  state_->stopped = true;
  if (state_->acceptor) {
    boost::system::error_code ignored;
    state_->acceptor->close(ignored);
  }
  for (auto& [id, stream] : state_->open)
    stream->cancel();
}

std::size_t http_server::open_connections() const noexcept {
  return state_->connections;
}

}  // namespace mws::runtime
