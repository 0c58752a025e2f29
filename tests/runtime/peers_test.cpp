// The node's connections over real TCP on loopback: large messages are offered, granted and sent
// in pieces, small ones pass them, and every break of the framing ends the link with a reason.
#include "runtime/detail/peers.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <numeric>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "run_until.hpp"
#include "transport/listener.hpp"

namespace mws::runtime::detail {
namespace {

namespace asio = boost::asio;
using bytes = std::vector<std::uint8_t>;
using test::run_until;

constexpr std::size_t large_bytes = large_message_bytes;  // larger messages are offered
constexpr std::size_t piece = (64 << 10) + 7;
constexpr std::size_t message_max = std::size_t{128} << 20;

hello hello_for(std::uint16_t port) {
  hello h;
  h.address = "127.0.0.1:" + std::to_string(port);
  h.boot = port;
  h.tensors.tensors = {{"w", gpu::dtype::f32, {16}}};
  return h;
}

// A channel prefix whose length field says `total`.
bytes prefix_of(channel ch, std::size_t total) {
  bytes m = channel_prefix(ch);
  for (std::size_t i = 1; i < channel_prefix_bytes; ++i)
    m[i] = static_cast<std::uint8_t>(total >> (8 * (i - 1)));
  return m;
}

// A transport message with channel `ch` and the given body (length field filled in).
bytes framed(channel ch, const bytes& body) {
  bytes m = prefix_of(ch, channel_prefix_bytes + body.size());
  m.insert(m.end(), body.begin(), body.end());
  return m;
}

// A message on `ch` with `n` body bytes (k, k+1, ...).
bytes message_of(channel ch, std::size_t n, std::uint8_t k = 0) {
  bytes body(n);
  for (std::size_t i = 0; i < n; ++i)
    body[i] = static_cast<std::uint8_t>(k + i);
  return framed(ch, body);
}

// A piece's prefix (a message of its own, its length field 8 + body size).
bytes piece_prefix(std::size_t n) {
  return prefix_of(channel::piece, channel_prefix_bytes + n);
}

// A node's peers: listening on loopback, recording what arrives and what it refuses.
struct endpoint {
  // Takes large averaging messages piece by piece (when `stream`).
  struct recorder final : large_receiver {
    explicit recorder(endpoint& e) : to(e) {}
    void on_bytes(std::span<const std::uint8_t> b, bool last) override {
      REQUIRE(!done);
      got.insert(got.end(), b.begin(), b.end());
      ++to.pieces;
      if (last) to.streamed.push_back(std::move(got));
      done = last;
    }
    void on_cut() override {
      REQUIRE(!done);
      done = true;
      ++to.cuts;
    }
    endpoint& to;
    bytes got;
    bool done = false;
  };

  explicit endpoint(asio::io_context& io, std::chrono::milliseconds large_timeout = {},
                    std::size_t piece_bytes = piece) {
    auto opened = transport::listener::open(io.get_executor(),
                                            {asio::ip::make_address("127.0.0.1"), 0}, id, {});
    REQUIRE(opened);
    listener = std::move(*opened);
    peers_config cfg;
    cfg.own = hello_for(port());
    cfg.message_bytes_max = message_max;
    cfg.piece_bytes = piece_bytes;
    if (large_timeout.count() != 0) {
      cfg.large_message_timeout = large_timeout;
      cfg.connection.handshake_timeout = large_timeout;  // the watch's first look comes after it
    }
    p = std::make_unique<peers>(
        io.get_executor(), id, cfg,
        peer_events{[](auto&&...) {},
                    [this](const transport::public_key&, channel ch, incoming m) {
                      got.emplace_back(ch, bytes(m->bytes().begin(), m->bytes().end()));
                      if (hold) held.push_back(std::move(m));
                    },
                    [this](const std::string&, const std::string& reason, const std::string&) {
                      refused.push_back(reason);
                    },
                    [this](const transport::public_key&, std::span<const std::uint8_t> first,
                           std::size_t) -> std::shared_ptr<large_receiver> {
                      firsts.emplace_back(first.begin(), first.end());
                      return stream ? std::make_shared<recorder>(*this) : nullptr;
                    }});
    asio::co_spawn(io,
                   listener->run([this](transport::connection c) { p->adopt(std::move(c)); },
                                 [](const std::string&, boost::system::error_code) {}),
                   asio::detached);
  }
  ~endpoint() {
    p->close_all();
    listener->stop();
  }
  std::uint16_t port() const { return listener->local_endpoint().port(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }

  // `owner`: the message goes only while it lives (outgoing::owner); its bytes stay `m`'s copy.
  void send(const endpoint& to, const bytes& m, const std::shared_ptr<const void>& owner = {}) {
    auto kept = std::make_shared<bytes>(m.begin() + channel_prefix_bytes, m.end());
    outgoing out{channel_prefix(static_cast<channel>(m[0])), {asio::buffer(*kept)}, kept};
    if (owner) {
      out.what = owner.get();
      out.owner = owner;
    }
    p->send(to.id.public_key_bytes(), to.address(), std::move(out));
  }

  transport::identity id = transport::identity::generate();
  std::unique_ptr<transport::listener> listener;
  std::unique_ptr<peers> p;
  std::vector<std::pair<channel, bytes>> got;
  bool hold = false;           // keep every message's buffer (and its large slot)
  std::vector<incoming> held;  // ... here
  std::vector<std::string> refused;
  bool stream = false;          // large averaging messages go to a recorder
  std::vector<bytes> firsts;    // what on_large saw
  std::vector<bytes> streamed;  // what recorders got, whole
  std::size_t pieces = 0, cuts = 0;
};

TEST_CASE("a large message is offered, granted and arrives whole in pieces") {
  asio::io_context io;
  endpoint a(io), b(io);
  const auto big = message_of(channel::averaging, 3 * large_bytes + 123, 7);
  const auto small = message_of(channel::membership, 100, 1);
  a.send(b, big);
  a.send(b, small);
  REQUIRE(run_until(io, [&] { return b.got.size() == 2; }));
  CHECK(b.got[0] == std::pair{channel::membership, small});  // small messages go first
  CHECK(b.got[1] == std::pair{channel::averaging, big});
  CHECK(b.refused.empty());
  CHECK(run_until(io, [&] { return a.p->stats().messages_sent == 2; }));
  CHECK(a.p->stats().bytes_sent == big.size() + small.size());
  CHECK(b.p->stats().messages_received == 2);
  CHECK(b.p->stats().bytes_received == big.size() + small.size());
}

TEST_CASE("membership messages pass a large message that waits for its slot") {
  asio::io_context io;
  endpoint a(io), b(io);
  b.hold = true;  // the first large message keeps the only slot
  const auto first = message_of(channel::averaging, 3 * large_bytes, 1);
  a.send(b, first);
  REQUIRE(run_until(io, [&] { return b.got.size() == 1; }));
  const auto second = message_of(channel::averaging, 3 * large_bytes, 2);
  const auto ping = message_of(channel::membership, 40, 3);
  a.send(b, second);
  a.send(b, ping);
  REQUIRE(run_until(io, [&] { return b.got.size() == 2; }));
  CHECK(b.got[1] == std::pair{channel::membership, ping});
  // Nothing more arrives while the slot is held: the second is offered, not granted.
  REQUIRE(run_until(io, [&] { return b.p->offers_waiting() == 1; }));
  CHECK(b.got.size() == 2);
  CHECK(b.p->stats().granted == 1);
  b.hold = false;
  b.held.clear();  // frees the slot: the waiting offer is granted
  REQUIRE(run_until(io, [&] { return b.got.size() == 3; }));
  CHECK(b.got[2] == std::pair{channel::averaging, second});
  CHECK(b.p->offers_waiting() == 0);
  CHECK(b.p->stats().granted == 2);
  CHECK(b.refused.empty());
}

bytes le64(std::uint64_t v) {
  bytes b(8);
  for (std::size_t i = 0; i < 8; ++i)
    b[i] = static_cast<std::uint8_t>(v >> (8 * i));
  return b;
}

// Connects to `to` as a raw transport peer, sends a valid hello and then `messages`, and keeps
// the connection in `keep` (the test's loop ends before it closes).
void speak_raw(asio::io_context& io, const endpoint& to, std::vector<bytes> messages,
               std::shared_ptr<transport::connection>& keep,
               transport::identity self = transport::identity::generate()) {
  messages.insert(messages.begin(), framed(channel::hello, encode_hello(hello_for(1))));
  asio::co_spawn(
      io,
      [&to, &keep, self, messages = std::move(messages)]() -> asio::awaitable<void> {
        auto c =
            co_await transport::dial({asio::ip::make_address("127.0.0.1"), to.port()}, self, {});
        if (!c) co_return;
        keep = std::make_shared<transport::connection>(std::move(*c));
        for (const auto& m : messages) {
          const asio::const_buffer part(m.data(), m.size());
          if (co_await keep->send({&part, 1})) co_return;
        }
      },
      asio::detached);
}

struct bad_case {
  const char* what;
  std::vector<bytes> messages;
  const char* reason;
};

TEST_CASE(
    "a peer that breaks the framing is cut off with the reason, and nothing reaches the node") {
  const std::size_t offered = 2 * large_bytes;
  const auto big = message_of(channel::averaging, offered - channel_prefix_bytes);
  const bytes first_piece(big.begin(), big.begin() + piece);
  auto bad_prefix = big;
  bad_prefix[0] = static_cast<std::uint8_t>(channel::hello);
  const bad_case cases[] = {
      {"a piece with no grant", {piece_prefix(first_piece.size()), first_piece}, "bad_framing"},
      {"a grant with no offer", {framed(channel::grant, {})}, "bad_framing"},
      {"a grant with a body", {framed(channel::grant, le64(1))}, "bad_framing"},
      {"an offer with a short body", {framed(channel::offer, bytes(4))}, "bad_framing"},
      {"a large message sent whole", {big}, "bad_framing"},
      {"an offer above the largest message",
       {framed(channel::offer, le64(message_max + 1))},
       "bad_framing"},
      {"an offer of a small message", {framed(channel::offer, le64(large_bytes))}, "bad_framing"},
      {"a second offer",
       {framed(channel::offer, le64(offered)), framed(channel::offer, le64(offered))},
       "bad_framing"},
      {"an empty piece", {framed(channel::offer, le64(offered)), piece_prefix(0)}, "bad_framing"},
      {"a piece past the offered length",
       {framed(channel::offer, le64(offered)), piece_prefix(offered + 1), bytes(offered + 1)},
       "bad_framing"},
      {"a large message with a hello prefix",
       {framed(channel::offer, le64(offered)), piece_prefix(bad_prefix.size()), bad_prefix},
       "bad_framing"},
      {"a piece's prefix and body in one message",
       {framed(channel::offer, le64(offered)), framed(channel::piece, first_piece)},
       "bad_framing"},
      {"a first piece shorter than a prefix",
       {framed(channel::offer, le64(offered)), piece_prefix(4), bytes(4)},
       "bad_framing"},
      {"a piece over the most a piece carries",
       {framed(channel::offer, le64(offered)), piece_prefix(large_bytes + 8), big},
       "bad_framing"},
      {"an unknown channel", {framed(static_cast<channel>(9), bytes(3))}, "bad_channel"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    asio::io_context io;
    endpoint b(io);
    std::shared_ptr<transport::connection> raw;
    speak_raw(io, b, c.messages, raw);
    REQUIRE(run_until(io, [&] { return !b.refused.empty(); }));
    CHECK(b.refused == std::vector<std::string>{c.reason});
    CHECK(b.got.empty());
    CHECK(run_until(io, [&] { return b.p->connected_peers() == 0; }));
  }
}

TEST_CASE("a large averaging message streams piece by piece to the receiver on_large gives") {
  asio::io_context io;
  endpoint a(io), b(io);
  b.stream = true;
  const auto big = message_of(channel::averaging, 3 * large_bytes + 123, 7);
  const auto second = message_of(channel::averaging, 2 * large_bytes, 8);
  const auto table = message_of(channel::membership, 2 * large_bytes, 9);
  a.send(b, big);
  a.send(b, table);
  a.send(b, second);
  REQUIRE(run_until(io, [&] { return b.streamed.size() == 2 && b.got.size() == 1; }));
  CHECK(b.streamed[0] == big);
  CHECK(b.streamed[1] == second);
  CHECK(b.pieces == (big.size() + piece - 1) / piece + (second.size() + piece - 1) / piece);
  // on_large saw each averaging message's first piece; membership goes whole.
  REQUIRE(b.firsts.size() == 2);
  CHECK(b.firsts[0] == bytes(big.begin(), big.begin() + piece));
  CHECK(b.got[0] == std::pair{channel::membership, table});
  CHECK(b.p->stats().granted == 3);  // a streamed message's slot is free at its end
  CHECK(b.p->stats().messages_received == 3);
  CHECK(b.p->stats().bytes_received == big.size() + second.size() + table.size());
  CHECK(b.cuts == 0);
  CHECK(b.refused.empty());
}

TEST_CASE("a link that ends while a message streams in tells its receiver, once") {
  asio::io_context io;
  endpoint a(io), b(io);
  b.stream = true;
  a.send(b, message_of(channel::averaging, 64 * large_bytes, 3));
  REQUIRE(run_until(io, [&] { return b.pieces >= 2; }));
  b.p->close_all();
  REQUIRE(run_until(io, [&] { return b.cuts == 1; }));
  io.run_for(std::chrono::milliseconds(50));
  CHECK(b.cuts == 1);
  CHECK(b.streamed.empty());
}

TEST_CASE("a large message is queued for its peer until it has gone, and goes whole") {
  // Its bytes are owned apart from its owner (as a GPU's host copy is): only the message holds
  // them, and they must last to its last piece.
  asio::io_context io;
  endpoint a(io), b(io);
  b.hold = true;
  const auto first = std::make_shared<int>(1), second = std::make_shared<int>(2);
  const auto big = message_of(channel::averaging, 2 * large_bytes, 1);
  a.send(b, big, first);
  REQUIRE(run_until(io, [&] { return b.got.size() == 1; }));
  CHECK(b.got[0] == std::pair{channel::averaging, big});
  CHECK(!a.p->queued(b.id.public_key_bytes(), first.get()));
  const auto next = message_of(channel::averaging, 2 * large_bytes, 2);
  a.send(b, next, second);
  REQUIRE(run_until(io, [&] { return b.p->offers_waiting() == 1; }));
  CHECK(a.p->queued(b.id.public_key_bytes(), second.get()));  // offered, waiting for its grant
  CHECK(!a.p->queued(b.id.public_key_bytes(), first.get()));
  CHECK(!a.p->queued(a.id.public_key_bytes(), second.get()));
  b.hold = false;
  b.held.clear();
  REQUIRE(run_until(io, [&] { return b.got.size() == 2; }));
  CHECK(b.got[1] == std::pair{channel::averaging, next});
  CHECK(!a.p->queued(b.id.public_key_bytes(), second.get()));
}

TEST_CASE("copies whose owner has gone leave the queue and its room") {
  asio::io_context io;
  endpoint a(io), b(io);
  b.hold = true;
  a.send(b, message_of(channel::averaging, 2 * large_bytes, 1));
  REQUIRE(run_until(io, [&] { return b.got.size() == 1; }));
  a.send(b, message_of(channel::averaging, 2 * large_bytes, 2));  // offered, waits
  REQUIRE(run_until(io, [&] { return b.p->offers_waiting() == 1; }));
  for (int k = 0; k < 3; ++k) {  // the outbox's other 3 places, each a copy given up
    auto gone = std::make_shared<int>(k);
    a.send(b, message_of(channel::averaging, 2 * large_bytes, 3), gone);
  }
  const auto dropped = a.p->stats().dropped;
  auto live = std::make_shared<int>(9);
  const auto last = message_of(channel::averaging, 2 * large_bytes, 4);
  a.send(b, last, live);  // finds room: the 3 copies go
  CHECK(a.p->stats().superseded == 3);
  CHECK(a.p->stats().dropped == dropped);
  b.hold = false;
  b.held.clear();
  REQUIRE(run_until(io, [&] { return b.got.size() == 3; }));
  CHECK(b.got[2] == std::pair{channel::averaging, last});
}

TEST_CASE("a large message whose owner has gone before its turn is dropped, not sent") {
  asio::io_context io;
  endpoint a(io), b(io);
  b.hold = true;  // the first keeps b's only slot: the others wait
  a.send(b, message_of(channel::averaging, 2 * large_bytes, 1));
  REQUIRE(run_until(io, [&] { return b.got.size() == 1; }));
  const auto send_owned = [&](const bytes& m, const std::shared_ptr<bytes>& owner) {
    *owner = bytes(m.begin() + channel_prefix_bytes, m.end());
    outgoing out{channel_prefix(channel::averaging), {asio::buffer(*owner)}, nullptr, owner.get()};
    out.owner = owner;
    a.p->send(b.id.public_key_bytes(), b.address(), std::move(out));
  };
  auto gone = std::make_shared<bytes>(), kept = std::make_shared<bytes>();
  const auto second = message_of(channel::averaging, 2 * large_bytes, 2);
  const auto third = message_of(channel::averaging, 2 * large_bytes, 3);
  send_owned(second, gone);
  send_owned(third, kept);
  REQUIRE(run_until(io, [&] { return b.p->offers_waiting() == 1; }));  // the second, offered
  CHECK(a.p->queued(b.id.public_key_bytes(), kept.get()));
  const auto* third_what = kept.get();
  kept.reset();  // the third's owner goes while it waits behind the second
  CHECK(!a.p->queued(b.id.public_key_bytes(), third_what));
  gone.reset();  // the second was offered: it holds its bytes and still goes
  b.hold = false;
  b.held.clear();
  REQUIRE(run_until(io, [&] { return a.p->stats().superseded == 1; }));
  REQUIRE(run_until(io, [&] { return b.got.size() == 2; }));
  CHECK(b.got[1] == std::pair{channel::averaging, second});
  io.run_for(std::chrono::milliseconds(100));
  CHECK(b.got.size() == 2);
  CHECK(b.refused.empty());
}

TEST_CASE("closing a peer's links drops what waits for it, and it can be reached again") {
  asio::io_context io;
  endpoint a(io), b(io), c(io);
  b.hold = true;  // b's only slot stays taken: a's second large message waits for its grant
  a.send(b, message_of(channel::averaging, 2 * large_bytes, 1));
  a.send(c, message_of(channel::membership, 10, 2));
  REQUIRE(run_until(io, [&] { return b.got.size() == 1 && c.got.size() == 1; }));
  a.send(b, message_of(channel::averaging, 2 * large_bytes, 3));
  a.send(b, message_of(channel::averaging, 2 * large_bytes, 4));
  REQUIRE(run_until(io, [&] { return b.p->offers_waiting() == 1; }));
  const auto dropped = a.p->stats().dropped;
  a.p->close_peer(b.id.public_key_bytes());
  CHECK(a.p->stats().dropped == dropped + 2);
  CHECK(a.p->connected_peers() == 1);  // c's link stays
  b.hold = false;
  b.held.clear();
  const auto ping = message_of(channel::membership, 10, 5);
  a.send(b, ping);  // dials b again
  REQUIRE(run_until(io, [&] { return b.got.size() == 2; }));
  CHECK(b.got[1] == std::pair{channel::membership, ping});
}

TEST_CASE("a granted large message must keep arriving, and its slot goes to the next offer") {
  asio::io_context io;
  endpoint b(io, std::chrono::milliseconds(300)), a(io);
  std::shared_ptr<transport::connection> raw;
  // The raw peer is granted the only slot and never sends a piece.
  speak_raw(io, b, {framed(channel::offer, le64(2 * large_bytes))}, raw);
  REQUIRE(run_until(io, [&] { return b.p->connected_peers() == 1; }));
  const auto big = message_of(channel::averaging, 3 * large_bytes, 5);
  a.send(b, big);
  REQUIRE(run_until(io, [&] { return !b.got.empty(); }));
  CHECK(b.refused == std::vector<std::string>{"stalled"});
  CHECK(b.got[0] == std::pair{channel::averaging, big});
}

TEST_CASE("an offer that is never granted ends the link") {
  asio::io_context io;
  endpoint b(io, std::chrono::milliseconds(300));
  std::shared_ptr<transport::connection> raw;
  const auto raw_id = transport::identity::generate();
  speak_raw(io, b, {}, raw, raw_id);  // says hello, then never grants
  REQUIRE(run_until(io, [&] { return b.p->connected_peers() == 1; }));
  const auto big = message_of(channel::averaging, 2 * large_bytes);
  auto kept = std::make_shared<bytes>(big.begin() + channel_prefix_bytes, big.end());
  b.p->send(raw_id.public_key_bytes(), "",
            {channel_prefix(channel::averaging), {asio::buffer(*kept)}, kept});
  REQUIRE(run_until(io, [&] { return !b.refused.empty(); }));
  CHECK(b.refused == std::vector<std::string>{"stalled"});
  CHECK(run_until(io, [&] { return b.p->connected_peers() == 0; }));
}

TEST_CASE("a small message sent while a large one is on its way arrives before its end") {
  asio::io_context io;
  endpoint a(io), b(io);
  const auto big = message_of(channel::averaging, 64 * large_bytes, 3);
  a.send(b, big);
  // Mid-transfer: some pieces out, the rest still to go.
  REQUIRE(run_until(io, [&] { return a.p->stats().bytes_sent > 4 * piece; }));
  REQUIRE(a.p->stats().bytes_sent < big.size() / 2);
  const auto ping = message_of(channel::membership, 40, 9);
  a.send(b, ping);
  REQUIRE(run_until(io, [&] { return b.got.size() == 2; }));
  CHECK(b.got[0] == std::pair{channel::membership, ping});
  CHECK(b.got[1] == std::pair{channel::averaging, big});
}

TEST_CASE("closing while a large message arrives frees its buffer safely") {
  // Under ASan this catches a buffer freed while the transport still writes into it: large
  // pieces keep the receiver inside a piece most of the time (16 MiB asked for, clamped to the
  // most a piece may carry, 1 MiB).
  asio::io_context io;
  endpoint a(io, {}, 16 * large_bytes), b(io);
  a.send(b, message_of(channel::averaging, 32 * large_bytes));
  REQUIRE(run_until(io, [&] { return a.p->connected_peers() == 1; }));
  io.run_for(std::chrono::milliseconds(20));  // the offer, the grant, part of the first piece
  b.p->close_all();
  REQUIRE(run_until(io, [&] { return a.p->connected_peers() == 0; }));
  io.run_for(std::chrono::milliseconds(100));
  CHECK(b.got.empty());
}

TEST_CASE("a transport message longer than its length field ends the link") {
  auto whole = message_of(channel::membership, 100);
  whole[1] = 50;  // the length field says 50 bytes of 108
  const std::vector<bytes> cases[] = {
      {whole, message_of(channel::membership, 10)},
      {framed(channel::offer, le64(2 * large_bytes)), piece_prefix(100), bytes(101)},
  };
  for (const auto& messages : cases) {
    asio::io_context io;
    endpoint b(io);
    std::shared_ptr<transport::connection> raw;
    speak_raw(io, b, messages, raw);
    REQUIRE(run_until(io, [&] { return raw && !raw->is_open(); }));
    CHECK(b.got.empty());
  }
}

}  // namespace
}  // namespace mws::runtime::detail
