// The listener and dialler over real TCP on 127.0.0.1 and ::1, against honest and hostile peers.
#include "transport/listener.hpp"

#include <functional>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "tests/transport/support.hpp"
#include "transport/detail/frame.hpp"
#include "transport/error.hpp"

namespace mws::transport {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

// An echo server that records what it refused and how each connection ended.
struct server {
  identity id = identity::generate();
  listener_config config;
  std::unique_ptr<listener> lst;
  std::vector<error_code> refusals;
  std::vector<error_code> connection_ends;
  std::size_t echoed = 0;

  static asio::awaitable<void> echo(connection c, server* s) {
    std::vector<std::uint8_t> message, buffer(64 * 1024);
    while (true) {
      auto r = co_await c.receive(asio::buffer(buffer));
      if (!r) {
        s->connection_ends.push_back(r.error());
        co_return;
      }
      message.insert(message.end(), buffer.begin(),
                     buffer.begin() + static_cast<std::ptrdiff_t>(r->bytes));
      if (r->end_of_message) {
        const std::array<asio::const_buffer, 1> parts{asio::buffer(message)};
        if (co_await c.send(parts)) continue;
        ++s->echoed;
        message.clear();
      }
    }
  }

  bool open(asio::io_context& io, const tcp::endpoint& at) {
    auto opened = listener::open(io.get_executor(), at, id, config);
    if (!opened) return false;
    lst = std::move(*opened);
    asio::co_spawn(io,
                   lst->run(
                       [this, &io](connection c) {
                         asio::co_spawn(io, echo(std::move(c), this), asio::detached);
                       },
                       [this](const std::string&, error_code ec) { refusals.push_back(ec); }),
                   asio::detached);
    return true;
  }
};

asio::awaitable<void> wait_until(std::function<bool()> done) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (!done()) {
    t.expires_after(std::chrono::milliseconds(2));
    co_await t.async_wait(asio::use_awaitable);
  }
}

// An honest peer: dial, send a message, expect the echo, close.
asio::awaitable<void> honest_round_trip(tcp::endpoint at, const identity& server_id,
                                        connection_config cfg) {
  const identity me = identity::generate();
  cfg.handshake.expected_peer = server_id.public_key_bytes();
  auto c = co_await dial(at, me, cfg);
  REQUIRE_MESSAGE(c.has_value(), c.error().message());
  std::vector<std::uint8_t> payload(200'000);
  for (std::size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<std::uint8_t>(i * 31);
  const std::array<asio::const_buffer, 1> parts{asio::buffer(payload)};
  CHECK_FALSE(co_await c->send(parts));
  std::vector<std::uint8_t> back(payload.size());
  std::size_t at_byte = 0;
  while (true) {
    auto r = co_await c->receive(asio::buffer(back.data() + at_byte, back.size() - at_byte));
    REQUIRE(r.has_value());
    at_byte += r->bytes;
    if (r->end_of_message) break;
  }
  CHECK(at_byte == payload.size());
  CHECK(back == payload);
  co_await c->close();
}

// A hand-driven initiator on a raw socket: what a hostile peer with valid keys can do.
asio::awaitable<boost::system::result<session>> raw_handshake(tcp::socket& s, const identity& me,
                                                              const handshake_config& cfg) {
  handshake_initiator hs(me, cfg);
  const auto m1 = hs.write_message1();
  co_await asio::async_write(s, asio::buffer(m1), asio::use_awaitable);
  std::array<std::uint8_t, handshake_msg2_bytes> m2{};
  auto [ec, n] =
      co_await asio::async_read(s, asio::buffer(m2), asio::as_tuple(asio::use_awaitable));
  if (ec) co_return ec;
  auto m3 = hs.read_message2(m2);
  if (!m3) co_return m3.error();
  co_await asio::async_write(s, asio::buffer(*m3), asio::use_awaitable);
  co_return hs.finish();
}

std::vector<std::uint8_t> wire(detail::frame_sealer& sealer, detail::frame_type type,
                               std::size_t n) {
  std::vector<std::uint8_t> plain(n, 0x42), out(detail::frame_header_bytes + n + detail::tag_bytes);
  detail::header_bytes header{};
  std::array<std::uint8_t, detail::tag_bytes> tag{};
  sealer.seal(type, plain.data(), n, out.data() + detail::frame_header_bytes, header, tag);
  std::copy(header.begin(), header.end(), out.begin());
  std::copy(tag.begin(), tag.end(), out.end() - detail::tag_bytes);
  return out;
}

std::vector<tcp::endpoint> loopbacks() {
  std::vector<tcp::endpoint> out{tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  asio::io_context io;
  tcp::acceptor probe(io);
  error_code ec;
  probe.open(tcp::v6(), ec);
  if (!ec) probe.bind(tcp::endpoint(asio::ip::make_address("::1"), 0), ec);
  if (!ec) {
    out.emplace_back(asio::ip::make_address("::1"), 0);
  } else {
    MESSAGE("::1 is not available here; IPv6 cases skipped");
  }
  return out;
}

TEST_CASE("an honest peer completes a handshake and a round trip over TCP, both AEADs") {
  for (const auto& where : loopbacks()) {
    for (const bool aes : {true, false}) {
      asio::io_context io;
      server srv;
      srv.config.connection.handshake.offer_aes256gcm = aes;
      REQUIRE(srv.open(io, where));
      test::run(io, [&]() -> asio::awaitable<void> {
        co_await honest_round_trip(srv.lst->local_endpoint(), srv.id, connection_config{});
        co_await wait_until([&] { return srv.connection_ends.size() == 1; });
        CHECK(srv.connection_ends[0] == make_error_code(errc::closed_by_peer));
        CHECK(srv.echoed == 1);
        CHECK(srv.refusals.empty());
        srv.lst->stop();
      });
    }
  }
}

// Each hostile case: the attack runs, the server reports the specific error, and an honest peer
// is served right after on the same listener.
struct hostile_case {
  const char* name;
  std::function<asio::awaitable<void>(tcp::endpoint, server&)> attack;
  errc expected;
  bool at_handshake;  // refused at the handshake (on_refused) or later (connection end)
};

asio::awaitable<void> send_raw(tcp::endpoint at, std::vector<std::uint8_t> bytes) {
  tcp::socket s(co_await asio::this_coro::executor);
  co_await s.async_connect(at, asio::use_awaitable);
  co_await asio::async_write(s, asio::buffer(bytes), asio::use_awaitable);
  s.shutdown(tcp::socket::shutdown_send);
  std::array<std::uint8_t, 256> sink{};
  (void)co_await s.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
}

// Completes a valid handshake, then writes what `frames` makes of a sealer, then waits for the
// server to hang up.
asio::awaitable<void> after_handshake(
    tcp::endpoint at, std::function<std::vector<std::uint8_t>(detail::frame_sealer&)> frames,
    std::uint32_t window_bytes = 16u << 20) {
  tcp::socket s(co_await asio::this_coro::executor);
  co_await s.async_connect(at, asio::use_awaitable);
  const identity me = identity::generate();
  handshake_config cfg;
  cfg.limits.window_bytes = window_bytes;
  auto sess = co_await raw_handshake(s, me, cfg);
  REQUIRE(sess.has_value());
  detail::frame_sealer sealer(sess->aead, sess->send_key, sess->local.rekey_after_frames,
                              sess->local.rekey_after_bytes);
  const auto bytes = frames(sealer);
  (void)co_await asio::async_write(s, asio::buffer(bytes), asio::as_tuple(asio::use_awaitable));
  s.shutdown(tcp::socket::shutdown_send);
  std::array<std::uint8_t, 4096> sink{};
  while (true) {
    auto [ec, n] =
        co_await s.async_read_some(asio::buffer(sink), asio::as_tuple(asio::use_awaitable));
    if (ec) break;
  }
}

TEST_CASE("hostile peers are refused with specific errors while the listener serves others") {
  std::vector<hostile_case> cases;
  cases.push_back({"wrong pre-shared key",
                   [](tcp::endpoint at, server& srv) -> asio::awaitable<void> {
                     connection_config cfg;
                     cfg.handshake.mesh_psk = std::array<std::uint8_t, 32>{0xee};
                     auto c = co_await dial(at, identity::generate(), cfg);
                     CHECK_FALSE(c.has_value());
                     (void)srv;
                   },
                   errc::psk_mismatch, true});
  cases.push_back({"key not on the allowlist",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     auto c = co_await dial(at, identity::generate(), connection_config{});
                     if (c) {  // the initiator finishes first; the responder then hangs up
                       std::array<std::uint8_t, 8> b{};
                       auto r = co_await c->receive(asio::buffer(b));
                       CHECK_FALSE(r.has_value());
                     }
                   },
                   errc::peer_not_allowed, true});
  cases.push_back({"truncated handshake",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     const identity me = identity::generate();
                     const handshake_config cfg;
                     handshake_initiator hs(me, cfg);
                     const auto m1 = hs.write_message1();
                     co_await send_raw(at, std::vector<std::uint8_t>(m1.begin(), m1.begin() + 20));
                   },
                   errc::handshake_truncated, true});
  cases.push_back({"garbage bytes",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     std::vector<std::uint8_t> junk(4096);
                     for (std::size_t i = 0; i < junk.size(); ++i)
                       junk[i] = static_cast<std::uint8_t>(i * 7 + 3);
                     co_await send_raw(at, junk);
                   },
                   errc::handshake_bad_message, true});
  cases.push_back({"oversized length prefix",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     co_await after_handshake(at, [](detail::frame_sealer& s) {
                       auto f = wire(s, detail::frame_type::data, 10);
                       f[0] = 0xf0;
                       f[1] = f[2] = f[3] = 0xff;
                       return f;
                     });
                   },
                   errc::frame_too_large, false});
  cases.push_back({"flipped ciphertext bit",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     co_await after_handshake(at, [](detail::frame_sealer& s) {
                       auto f = wire(s, detail::frame_type::data_end, 1000);
                       f[detail::frame_header_bytes + 500] ^= 0x01;
                       return f;
                     });
                   },
                   errc::frame_auth_failed, false});
  cases.push_back({"replayed frame",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     co_await after_handshake(at, [](detail::frame_sealer& s) {
                       auto f = wire(s, detail::frame_type::data, 1000);
                       auto twice = f;
                       twice.insert(twice.end(), f.begin(), f.end());
                       return twice;
                     });
                   },
                   errc::frame_replayed, false});
  cases.push_back({"reordered frames",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     co_await after_handshake(at, [](detail::frame_sealer& s) {
                       auto first = wire(s, detail::frame_type::data, 1000);
                       auto second = wire(s, detail::frame_type::data_end, 1000);
                       second.insert(second.end(), first.begin(), first.end());
                       return second;
                     });
                   },
                   errc::frame_reordered, false});
  cases.push_back({"truncated frame",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     co_await after_handshake(at, [](detail::frame_sealer& s) {
                       auto f = wire(s, detail::frame_type::data_end, 1000);
                       f.resize(f.size() / 2);
                       return f;
                     });
                   },
                   errc::frame_truncated, false});
  cases.push_back({"a flood of empty messages beyond the window",
                   [](tcp::endpoint at, server&) -> asio::awaitable<void> {
                     // The attacker grants the echo only 1 KiB and never reads, so the server
                     // stops consuming; empty frames still cost window credit, so the flood
                     // overruns the server's 4 KiB window instead of growing its queue.
                     co_await after_handshake(
                         at,
                         [](detail::frame_sealer& s) {
                           std::vector<std::uint8_t> all;
                           for (int i = 0; i < 500; ++i) {
                             auto f = wire(s, detail::frame_type::data_end, 0);
                             all.insert(all.end(), f.begin(), f.end());
                           }
                           return all;
                         },
                         frame_bytes_floor);
                   },
                   errc::window_violation, false});

  for (const auto& where : loopbacks()) {
    for (const auto& c : cases) {
      INFO(c.name, " on ", where.address().to_string());
      asio::io_context io;
      server srv;
      if (c.expected == errc::psk_mismatch) {
        srv.config.connection.handshake.mesh_psk = std::array<std::uint8_t, 32>{0x11};
      }
      const identity allowed = identity::generate();
      if (c.expected == errc::window_violation) {
        srv.config.connection.handshake.limits.window_bytes = 4096;
      }
      if (c.expected == errc::peer_not_allowed) {
        srv.config.connection.handshake.allowlist = {allowed.public_key_bytes()};
      }
      REQUIRE(srv.open(io, where));
      test::run(io, [&]() -> asio::awaitable<void> {
        const auto at = srv.lst->local_endpoint();
        co_await c.attack(at, srv);
        if (c.at_handshake) {
          co_await wait_until([&] { return srv.refusals.size() == 1; });
          CHECK(srv.refusals[0] == make_error_code(c.expected));
        } else {
          co_await wait_until([&] { return srv.connection_ends.size() == 1; });
          CHECK(srv.connection_ends[0] == make_error_code(c.expected));
        }
        // The same listener serves an honest peer next.
        connection_config honest;
        honest.handshake.mesh_psk = srv.config.connection.handshake.mesh_psk;
        if (c.expected == errc::peer_not_allowed) {
          // Only `allowed` may connect: dial as it.
          honest.handshake.expected_peer = srv.id.public_key_bytes();
          auto conn = co_await dial(at, allowed, honest);
          REQUIRE(conn.has_value());
          co_await conn->close();
        } else {
          const std::size_t echoed_before = srv.echoed;
          co_await honest_round_trip(at, srv.id, honest);
          CHECK(srv.echoed == echoed_before + 1);
        }
        srv.lst->stop();
      });
    }
  }
}

TEST_CASE("connection caps and the handshake rate limit refuse the excess, then recover") {
  asio::io_context io;
  server srv;
  srv.config.connections_per_address_max = 2;
  srv.config.handshakes_per_second = 1e-6;  // no refill within the test
  srv.config.handshake_burst = 4;
  REQUIRE(srv.open(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)));
  test::run(io, [&]() -> asio::awaitable<void> {
    const auto at = srv.lst->local_endpoint();
    auto ex = co_await asio::this_coro::executor;
    // Two idle sockets hold both slots of 127.0.0.1 (their handshakes are pending).
    tcp::socket s1(ex), s2(ex);
    co_await s1.async_connect(at, asio::use_awaitable);
    co_await s2.async_connect(at, asio::use_awaitable);
    co_await wait_until([&] { return srv.lst->stats().accepted == 2; });
    auto third = co_await dial(at, identity::generate(), connection_config{});
    CHECK_FALSE(third.has_value());
    co_await wait_until([&] { return srv.refusals.size() == 1; });
    CHECK(srv.refusals[0] == make_error_code(errc::too_many_connections));
    // Freeing the slots lets the next peer in (it uses the third token of the bucket).
    s1.close();
    s2.close();
    co_await wait_until([&] { return srv.refusals.size() == 3; });  // both end as truncated
    CHECK(srv.refusals[1] == make_error_code(errc::handshake_truncated));
    co_await honest_round_trip(at, srv.id, connection_config{});
    // The fourth token goes to one more peer; the fifth handshake is over the rate.
    co_await honest_round_trip(at, srv.id, connection_config{});
    auto over = co_await dial(at, identity::generate(), connection_config{});
    CHECK_FALSE(over.has_value());
    co_await wait_until([&] { return srv.refusals.size() == 4; });
    CHECK(srv.refusals[3] == make_error_code(errc::rate_limited));
    srv.lst->stop();
  });
}

TEST_CASE("opening a listener on a port in use fails with the system error") {
  asio::io_context io;
  const identity id = identity::generate();
  auto first = listener::open(io.get_executor(),
                              tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), id, {});
  REQUIRE(first.has_value());
  tcp::acceptor plain(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto second = listener::open(io.get_executor(), plain.local_endpoint(), id, {});
  // SO_REUSEADDR does not let two listening sockets share a port on Linux.
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error() == asio::error::address_in_use);
}

}  // namespace
}  // namespace mws::transport
