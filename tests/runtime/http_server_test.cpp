#include "runtime/http_server.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "runtime/detail/atomic_file.hpp"

namespace mws::runtime {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

// A node-like loop on its own thread serving /metrics and /livez; the test talks to it with
// plain blocking sockets, as curl or Prometheus would.
struct fixture {
  asio::io_context loop;
  http_server server{loop.get_executor(), http_limits{2, 1024, 3, std::chrono::milliseconds(2000)}};
  tcp::endpoint endpoint;
  std::thread thread;

  fixture() {
    server.route("/metrics", [] {
      return http_response{200, "text/plain; version=0.0.4", "mws_up 1\n"};
    });
    server.route("/livez", [] { return http_response{200, "text/plain", "ok\n"}; });
    server.route("/file", [] {
      // Served from an open file, read from its start whatever its offset: 70,000 bytes.
      const int fd = detail::open_unnamed_file(std::filesystem::temp_directory_path());
      REQUIRE(fd >= 0);
      std::vector<std::byte> bytes(70'000);
      for (std::size_t i = 0; i < bytes.size(); ++i)
        bytes[i] = static_cast<std::byte>('a' + i % 26);
      REQUIRE(detail::write_all(fd, bytes));
      return http_response{200, "application/octet-stream", std::make_shared<http_file>(fd)};
    });
    endpoint = server.listen({asio::ip::make_address("127.0.0.1"), 0}).value();
    thread = std::thread([this] { loop.run(); });
  }
  ~fixture() {
    asio::post(loop, [this] { server.stop(); });
    thread.join();
  }

  // Sends raw bytes, then reads until the server closes; returns everything it answered.
  std::string exchange(const std::string& request) {
    asio::io_context io;
    tcp::socket s(io);
    s.connect(endpoint);
    asio::write(s, asio::buffer(request));
    std::string answer;
    boost::system::error_code ec;
    asio::read(s, asio::dynamic_buffer(answer), ec);
    return answer;
  }
};

TEST_CASE("GET of a route answers 200 with its body; HEAD the same headers without it") {
  fixture f;
  const std::string get =
      f.exchange("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  CHECK(get.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(get.find("Content-Type: text/plain; version=0.0.4\r\n") != std::string::npos);
  CHECK(get.ends_with("\r\n\r\nmws_up 1\n"));
  const std::string head =
      f.exchange("HEAD /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  CHECK(head.find("Content-Length: 3\r\n") != std::string::npos);
  CHECK(head.ends_with("\r\n\r\n"));
}

TEST_CASE("a file body is sent whole from its start; HEAD gets its length and no body") {
  fixture f;
  const std::string get = f.exchange("GET /file HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  CHECK(get.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(get.find("Content-Length: 70000\r\n") != std::string::npos);
  const auto body_at = get.find("\r\n\r\n") + 4;
  REQUIRE(get.size() - body_at == 70'000);
  bool same = true;
  for (std::size_t i = 0; i < 70'000; ++i)
    same = same && get[body_at + i] == static_cast<char>('a' + i % 26);
  CHECK(same);
  const std::string head =
      f.exchange("HEAD /file HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  CHECK(head.find("Content-Length: 70000\r\n") != std::string::npos);
  CHECK(head.ends_with("\r\n\r\n"));
}

TEST_CASE("unknown paths, other methods, bodies and garbage get error statuses") {
  fixture f;
  CHECK(f.exchange("GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .rfind("HTTP/1.1 404", 0) == 0);
  CHECK(f.exchange("POST /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .rfind("HTTP/1.1 405", 0) == 0);
  CHECK(f.exchange("GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
            .rfind("HTTP/1.1 413", 0) == 0);
  CHECK(f.exchange("\x16\x03\x01 garbage\r\n\r\n").rfind("HTTP/1.1 400", 0) == 0);
  const std::string huge = "GET /metrics HTTP/1.1\r\nX: " + std::string(4000, 'a') + "\r\n\r\n";
  CHECK(f.exchange(huge).rfind("HTTP/1.1 431", 0) == 0);
  // The server still serves well-formed requests afterwards.
  CHECK(f.exchange("GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .rfind("HTTP/1.1 200", 0) == 0);
}

TEST_CASE("a keep-alive connection is closed after the per-connection request cap") {
  fixture f;
  std::string three;
  for (int i = 0; i < 5; ++i)
    three += "GET /livez HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string answer = f.exchange(three);
  std::size_t responses = 0;
  for (auto at = answer.find("HTTP/1.1 200"); at != std::string::npos;
       at = answer.find("HTTP/1.1 200", at + 1))
    ++responses;
  CHECK(responses == 3);
}

TEST_CASE("listening on a port in use fails with a clear error") {
  fixture f;
  asio::io_context io;
  http_server second(io.get_executor());
  auto r = second.listen(f.endpoint);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == asio::error::address_in_use);
}

}  // namespace
}  // namespace mws::runtime
