#include "apps/mws-node/http_client.hpp"

#include <chrono>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace mws::node_app {

namespace beast = boost::beast;
namespace http = beast::http;

runtime::node_result<std::string> http_get(const std::string& address, const std::string& path) {
  auto where = runtime::parse_endpoint(address);
  if (!where) return runtime::node_error{"--http " + where.error().message};
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(30));
  beast::error_code ec;
  stream.connect(*where, ec);
  if (ec) return runtime::node_error{"cannot reach a node at " + address + ": " + ec.message()};
  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, address);
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(http_body_bytes_max);
  if (!ec) http::read(stream, buffer, parser, ec);
  if (ec) return runtime::node_error{address + path + ": " + ec.message()};
  const auto& res = parser.get();
  if (res.result() != http::status::ok) {
    return runtime::node_error{address + path + ": HTTP " + std::to_string(res.result_int())};
  }
  return {boost::system::in_place_value, res.body()};
}

}  // namespace mws::node_app
