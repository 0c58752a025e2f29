#include "runtime/detail/peers.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <new>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "gpu/host_pages.hpp"
#include "runtime/detail/spawn.hpp"
#include "transport/error.hpp"

namespace mws::runtime::detail {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using transport::public_key;

struct link {
  explicit link(asio::any_io_executor ex, transport::connection c)
      : conn(std::move(c)), wake(ex, asio::steady_timer::time_point::max()) {}
  transport::connection conn;
  asio::steady_timer wake;  // cancelled when the writer has something new to do or must stop
  std::optional<public_key> key;
  std::string dial_address;  // the address it was dialled at ("" when accepted)
  std::uint64_t messages_read = 0;
  bool ready = false;
  bool closed = false;
  // Sending: small messages go whole and first; large ones are offered one at a time.
  std::deque<outgoing> small;
  std::deque<std::shared_ptr<outgoing>> large;  // shared with the piece being sent
  enum class offer_state { none, offered, granted } sending = offer_state::none;
  std::size_t large_sent = 0;  // bytes of large.front() sent in pieces
  std::uint64_t offers_sent = 0;
  // Receiving: the peer's offer waiting for a slot, or the granted message coming in, into
  // `piece` until its first piece is in, then whole into `assembling` or on to `streaming`.
  std::size_t offered = 0;   // the length offered (0: no offer waiting)
  std::size_t incoming = 0;  // the length granted (0: none coming)
  std::size_t assembled = 0;
  std::shared_ptr<void> slot;  // the granted message's slot, until `assembling` takes it
  std::shared_ptr<std::uint8_t[]> piece;
  std::shared_ptr<message_buffer> assembling;
  std::shared_ptr<large_receiver> streaming;
  std::uint64_t large_read = 0;  // large messages completed
};

std::string hex(const public_key& k) {
  return transport::peer_id::of(k).to_string();
}

void put_length(std::vector<std::uint8_t>& head, std::size_t total) {
  for (std::size_t i = 1; i < channel_prefix_bytes; ++i)
    head[i] = static_cast<std::uint8_t>(total >> (8 * (i - 1)));
}

std::size_t get_length(const std::uint8_t* prefix) {
  std::size_t total = 0;
  for (std::size_t i = channel_prefix_bytes - 1; i >= 1; --i)
    total = total << 8 | prefix[i];
  return total;
}

}  // namespace

std::optional<std::pair<std::string, std::string>> split_host_port(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::pair{host, address.substr(colon + 1)};
}

std::vector<std::uint8_t> channel_prefix(channel ch) {
  std::vector<std::uint8_t> p(channel_prefix_bytes, 0);
  p[0] = static_cast<std::uint8_t>(ch);
  return p;
}

struct peers::state : std::enable_shared_from_this<state> {
  asio::any_io_executor ex;
  transport::identity self;
  peers_config cfg;
  peer_events ev;
  std::vector<std::uint8_t> hello_bytes;
  std::multimap<public_key, std::shared_ptr<link>> ready;
  std::map<std::string, std::deque<outgoing>> pending;  // by address: dials in progress
  std::vector<std::shared_ptr<link>> links;
  peers_stats stats;
  bool closing = false;
  std::size_t large_in_use = 0;              // slots granted or being handled
  std::deque<std::shared_ptr<link>> offers;  // links whose offer waits for a slot

  // Releases a large-message slot when the buffer that held it dies.
  struct large_slot {
    explicit large_slot(std::shared_ptr<state> s) : st(std::move(s)) {}
    large_slot(const large_slot&) = delete;
    large_slot& operator=(const large_slot&) = delete;
    std::shared_ptr<state> st;
    ~large_slot() {
      --st->large_in_use;
      st->grant_offers();
    }
  };

  // What a link's watch compares between two looks.
  struct look {
    bool offered = false;  // our offer waits for its grant
    std::uint64_t offers_sent = 0;
    bool granted = false;  // a message we granted is being assembled
    std::uint64_t large_read = 0;
    std::size_t assembled = 0;
    explicit look(const link& l)
        : offered(l.sending == link::offer_state::offered),
          offers_sent(l.offers_sent),
          granted(l.incoming != 0),
          large_read(l.large_read),
          assembled(l.assembled) {}
  };

  // Cuts a link that sends no hello within the handshake timeout, and later one whose offer
  // has waited for its grant, or whose granted message has not moved, for a whole
  // large_message_timeout: such a peer is cut off, not waited for; a slow one that keeps
  // moving is not. One watch per link, for as long as it is open.
  static awaitable<void> watch(std::shared_ptr<state> st, std::shared_ptr<link> l) {
    asio::steady_timer t(st->ex, st->cfg.connection.handshake_timeout);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    const char* why = l->messages_read == 0 ? "no hello" : nullptr;
    auto every = st->cfg.connection.handshake_timeout;
    for (look before(*l); !why && !l->closed;) {
      every = st->cfg.large_message_timeout;
      t.expires_after(every);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      const look now(*l);
      if (before.offered && now.offered && now.offers_sent == before.offers_sent) {
        why = "an offer not granted";
      } else if (before.granted && now.granted && now.large_read == before.large_read &&
                 now.assembled == before.assembled) {
        why = "a large message not moving";
      }
      before = now;
    }
    if (!why || l->closed) co_return;
    st->refuse(l->conn.remote_address() + " (" + hex(l->conn.remote_key()) + ")", "stalled",
               std::string(why) + " for " + std::to_string(every.count()) + " ms");
    st->end(*l);
  }

  // Reads into `into` the rest of a transport message whose prefix was read (`ended`: the
  // prefix ended it): exactly into.size() bytes, then its end.
  static awaitable<boost::system::error_code> read_rest(link& l, std::span<std::uint8_t> into,
                                                        bool ended) {
    std::size_t have = 0;
    while (have < into.size()) {
      if (ended) co_return transport::errc::frame_truncated;
      auto r = co_await l.conn.receive(asio::buffer(into.data() + have, into.size() - have));
      if (!r) co_return r.error();
      have += r->bytes;
      ended = r->end_of_message;
    }
    if (!ended) co_return transport::errc::frame_too_large;  // longer than its length field
    co_return boost::system::error_code{};
  }

  struct prefix {
    std::array<std::uint8_t, channel_prefix_bytes> bytes{};
    bool ended = false;
    channel ch() const noexcept { return static_cast<channel>(bytes[0]); }
    std::size_t length() const noexcept { return get_length(bytes.data()); }
  };

  static awaitable<boost::system::result<prefix>> read_prefix(link& l) {
    prefix p;
    std::size_t have = 0;
    while (have < p.bytes.size()) {
      auto r = co_await l.conn.receive(asio::buffer(p.bytes.data() + have, p.bytes.size() - have));
      if (!r) co_return r.error();
      have += r->bytes;
      p.ended = r->end_of_message;
      if (p.ended && have < p.bytes.size()) co_return transport::errc::frame_truncated;
    }
    co_return p;
  }

  // Reads the body of a whole message of at most `bytes_max` into a buffer of exactly its size.
  static awaitable<boost::system::result<incoming>> read_whole(link& l, const prefix& p,
                                                               std::size_t bytes_max) {
    const auto total = p.length();
    if (total < channel_prefix_bytes || total > bytes_max) {
      co_return transport::errc::frame_too_large;
    }
    auto buf = std::make_shared<message_buffer>();
    buf->data = std::make_shared_for_overwrite<std::uint8_t[]>(total);
    buf->size = total;
    std::memcpy(buf->data.get(), p.bytes.data(), p.bytes.size());
    if (auto ec = co_await read_rest(
            l, {buf->data.get() + channel_prefix_bytes, total - channel_prefix_bytes}, p.ended)) {
      co_return ec;
    }
    ++l.messages_read;
    co_return incoming(std::move(buf));
  }

  state(asio::any_io_executor e, const transport::identity& id, peers_config c, peer_events v)
      : ex(std::move(e)), self(id), cfg(std::move(c)), ev(std::move(v)) {
    cfg.piece_bytes = std::clamp(cfg.piece_bytes, channel_prefix_bytes, large_message_bytes);
    cfg.large_messages_max = std::max<std::size_t>(cfg.large_messages_max, 1);
    hello_bytes = channel_prefix(channel::hello);
    const auto body = encode_hello(cfg.own);
    hello_bytes.insert(hello_bytes.end(), body.begin(), body.end());
    put_length(hello_bytes, hello_bytes.size());
  }

  void refuse(const std::string& who, const std::string& reason, const std::string& why) {
    if (!closing && ev.on_refused) ev.on_refused(who, reason, why);
  }

  void enqueue(link& l, outgoing msg) {
    const auto total = msg.head.size() + asio::buffer_size(msg.tail);
    const bool large = total > large_message_bytes;
    // Copies whose owner has gone take no room (the front, once offered, is being sent).
    if (large) {
      const std::size_t first = l.sending == link::offer_state::none ? 0 : 1;
      for (std::size_t i = l.large.size(); i-- > first;) {
        const auto& m = *l.large[i];
        if (!m.owner || !m.owner->expired()) continue;
        l.large.erase(l.large.begin() + static_cast<std::ptrdiff_t>(i));
        ++stats.superseded;
      }
    }
    if (l.closed ||
        (large ? l.large.size() >= cfg.large_outbox_max : l.small.size() >= cfg.outbox_max)) {
      ++stats.dropped;
      return;
    }
    put_length(msg.head, total);
    if (large) {
      l.large.push_back(std::make_shared<outgoing>(std::move(msg)));
    } else {
      l.small.push_back(std::move(msg));
    }
    l.wake.cancel();
  }

  // A message of the framing itself: `ch` with an optional 8-byte body.
  static outgoing control(channel ch, std::optional<std::uint64_t> value = {}) {
    outgoing m;
    m.head = channel_prefix(ch);
    if (value) {
      for (int i = 0; i < 8; ++i)
        m.head.push_back(static_cast<std::uint8_t>(*value >> (8 * i)));
    }
    put_length(m.head, m.head.size());
    return m;
  }

  // Grants waiting offers while slots are free, oldest first.
  void grant_offers() {
    while (!closing && large_in_use < cfg.large_messages_max && !offers.empty()) {
      auto l = std::move(offers.front());
      offers.pop_front();
      if (l->closed) continue;
      if (!(l->piece = allocate(*l, std::min(l->offered, large_message_bytes)))) continue;
      ++large_in_use;  // the slot exists from here on, and gives it back
      l->slot = std::make_shared<large_slot>(shared_from_this());
      l->incoming = l->offered;
      l->assembled = 0;
      l->offered = 0;
      ++stats.granted;
      l->small.push_front(control(channel::grant));  // never dropped: the sender waits for it
      l->wake.cancel();
    }
  }

  // `n` bytes for a message from `l`, or null with the link refused (reason memory) and ended.
  std::shared_ptr<std::uint8_t[]> allocate(link& l, std::size_t n) {
    try {
      auto p = std::make_shared_for_overwrite<std::uint8_t[]>(n);
      gpu::advise_huge_pages(p.get(), n);
      return p;
    } catch (const std::bad_alloc&) {
      refuse(hex(*l.key), "memory", "no memory for a message of " + std::to_string(n) + " bytes");
      end(l);
      return nullptr;
    }
  }

  void start(std::shared_ptr<link> l) {
    links.push_back(l);
    auto self_ptr = shared_from_this();
    asio::co_spawn(ex, write_loop(self_ptr, l), rethrow_failure);
    asio::co_spawn(ex, read_loop(self_ptr, l), rethrow_failure);
    asio::co_spawn(ex, watch(self_ptr, l), rethrow_failure);
  }

  // The parts of `m` (head, then tail) from byte `from`, at most `n` bytes.
  static std::vector<asio::const_buffer> slice(const outgoing& m, std::size_t from, std::size_t n) {
    std::vector<asio::const_buffer> out;
    auto take = [&](asio::const_buffer b) {
      if (from >= b.size()) {
        from -= b.size();
        return;
      }
      b += from;
      from = 0;
      const auto k = std::min(n, b.size());
      if (k != 0) out.emplace_back(b.data(), k);
      n -= k;
    };
    take(asio::buffer(m.head));
    for (const auto& t : m.tail)
      take(t);
    return out;
  }

  // One transport message for the writer: `counted` bytes of protocol messages in it, the last
  // bytes of a protocol message when `last`.
  struct to_send {
    outgoing m;
    std::size_t counted = 0;
    bool last = false;
    bool split = false;  // a piece: its prefix and its body go as two transport messages
  };

  // What the writer sends next, or nothing while it must wait: small messages first, then the
  // offer of the next large message, or its next piece once granted.
  std::optional<to_send> next_to_send(link& l, std::size_t piece_bytes) {
    using enum link::offer_state;
    if (!l.small.empty()) {
      to_send next{std::move(l.small.front())};
      l.small.pop_front();
      const auto ch = static_cast<channel>(next.m.head[0]);
      if (ch == channel::membership || ch == channel::averaging) {
        next.counted = next.m.head.size() + asio::buffer_size(next.m.tail);
        next.last = true;
      }
      return next;
    }
    if (l.sending == none) drop_superseded(l);
    if (l.large.empty() || l.sending == offered) return std::nullopt;
    const auto& big = *l.large.front();
    const auto total = big.head.size() + asio::buffer_size(big.tail);
    if (l.sending == none) {
      l.sending = offered;
      ++l.offers_sent;
      return to_send{control(channel::offer, total)};
    }
    const auto n = std::min(piece_bytes, total - l.large_sent);
    outgoing piece = control(channel::piece);
    put_length(piece.head, channel_prefix_bytes + n);
    piece.tail = slice(big, l.large_sent, n);
    piece.keep = l.large.front();  // the head's bytes and, through it, the tail's owner
    l.large_sent += n;
    to_send next{std::move(piece), n, false, true};
    if (l.large_sent == total) {
      l.large.pop_front();
      l.large_sent = 0;
      l.sending = none;
      next.last = true;
    }
    return next;
  }

  // Before an offer: drops the large messages at the front whose owner has gone, and holds the
  // next one's (its bytes must last until its last piece).
  void drop_superseded(link& l) {
    while (!l.large.empty() && l.large.front()->owner) {
      auto& m = *l.large.front();
      if ((m.held = m.owner->lock())) return;
      l.large.pop_front();
      ++stats.superseded;
    }
  }

  static awaitable<void> write_loop(std::shared_ptr<state> st, std::shared_ptr<link> l) {
    const asio::const_buffer hello_part(st->hello_bytes.data(), st->hello_bytes.size());
    if (auto ec = co_await l->conn.send({&hello_part, 1})) co_return st->end(*l);
    std::vector<asio::const_buffer> parts;
    for (;;) {
      std::optional<to_send> next;
      while (!l->closed && !(next = st->next_to_send(*l, st->cfg.piece_bytes))) {
        l->wake.expires_at(asio::steady_timer::time_point::max());
        co_await l->wake.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      if (l->closed) co_return;
      const auto& m = next->m;
      parts.assign(1, asio::const_buffer(m.head.data(), m.head.size()));
      if (next->split) {
        if (auto ec = co_await l->conn.send(parts)) co_return st->end(*l);
        parts.clear();
      }
      parts.insert(parts.end(), m.tail.begin(), m.tail.end());
      if (auto ec = co_await l->conn.send(parts)) co_return st->end(*l);
      if (next->last) ++st->stats.messages_sent;
      st->stats.bytes_sent += next->counted;
    }
  }

  // Ends the link for breaking the framing; false, for the reader to return.
  bool broken(link& l, const std::string& why) {
    refuse(hex(*l.key), "bad_framing", why);
    end(l);
    return false;
  }

  // Handles one offer, grant or piece; false when the link ended.
  awaitable<bool> on_framing(std::shared_ptr<link> l, const prefix& p) {
    const auto length = p.length();
    if (p.ch() == channel::grant) {
      if (length != channel_prefix_bytes || !p.ended) co_return broken(*l, "a malformed grant");
      if (l->sending != link::offer_state::offered) co_return broken(*l, "a grant with no offer");
      l->sending = link::offer_state::granted;
      l->wake.cancel();
      co_return true;
    }
    if (p.ch() == channel::offer) {
      std::array<std::uint8_t, 8> v{};
      if (length != channel_prefix_bytes + v.size()) co_return broken(*l, "a malformed offer");
      if (auto ec = co_await read_rest(*l, v, p.ended)) {
        end(*l);
        co_return false;
      }
      if (l->closed) co_return false;
      std::uint64_t offered = 0;
      for (std::size_t i = v.size(); i-- > 0;)
        offered = offered << 8 | v[i];
      if (l->offered != 0 || l->incoming != 0) {
        co_return broken(*l, "a second large message offered before the first arrived");
      }
      if (offered <= large_message_bytes || offered > cfg.message_bytes_max) {
        co_return broken(*l, "an offer of " + std::to_string(offered) +
                                 " bytes, outside the sizes offered (" +
                                 std::to_string(large_message_bytes + 1) + " to " +
                                 std::to_string(cfg.message_bytes_max) + ")");
      }
      l->offered = static_cast<std::size_t>(offered);
      offers.push_back(l);
      grant_offers();
      co_return true;
    }
    // A piece.
    const auto n = length - std::min(length, channel_prefix_bytes);
    if (l->incoming == 0) co_return broken(*l, "a piece of a large message that was not granted");
    const auto left = l->incoming - l->assembled;
    const auto least = l->assembled == 0 ? std::min(left, channel_prefix_bytes) : 1;
    if (n < least || n > std::min(left, large_message_bytes)) {
      co_return broken(*l, "a piece of " + std::to_string(n) + " bytes where " +
                               std::to_string(left) + " remain");
    }
    if (!p.ended) co_return broken(*l, "a piece whose prefix is not a message of its own");
    // The body is the next transport message, read straight into its place (the transport
    // decrypts it there, with no copy). end() may drop the buffer meanwhile: keep its memory.
    const auto keep = l->assembling ? l->assembling->data : l->piece;
    const auto into = keep.get() + (l->assembling ? l->assembled : 0);
    if (auto ec = co_await read_rest(*l, {into, n}, false)) {
      end(*l);
      co_return false;
    }
    if (l->closed) co_return false;
    const bool first = l->assembled == 0;
    l->assembled += n;
    const bool last = l->assembled == l->incoming;
    if (first && !take_first_piece(*l, {into, n})) co_return false;
    const auto total = l->incoming;
    if (last) {
      ++l->large_read;
      l->incoming = 0;
      l->assembled = 0;
      l->piece.reset();
    }
    if (auto r = l->streaming) {
      if (last) {
        l->streaming.reset();
        l->slot.reset();
        ++stats.messages_received;
        stats.bytes_received += total;
      }
      r->on_bytes({into, n}, last);
    } else if (last) {
      const auto ch = static_cast<channel>(l->assembling->data[0]);
      deliver(*l, ch, incoming(std::move(l->assembling)));
    }
    co_return !l->closed;
  }

  // The first piece of the granted message, in l.piece: checks the message's own prefix, then
  // streams the message to the node's receiver or assembles it whole. False: the link ended.
  bool take_first_piece(link& l, std::span<const std::uint8_t> first) {
    const auto ch = static_cast<channel>(first[0]);
    if ((ch != channel::membership && ch != channel::averaging) ||
        get_length(first.data()) != l.incoming) {
      return broken(l,
                    "a large message whose prefix is not a membership or averaging one of its "
                    "length");
    }
    if (ch == channel::averaging && ev.on_large) {
      l.streaming = ev.on_large(*l.key, first, l.incoming);
      if (l.streaming) return true;
    }
    auto buf = std::make_shared<message_buffer>();
    if (!(buf->data = allocate(l, l.incoming))) return false;
    std::memcpy(buf->data.get(), first.data(), first.size());
    buf->size = l.incoming;
    buf->slot = std::move(l.slot);
    l.assembling = std::move(buf);
    l.piece.reset();  // `first` stays alive with the reader's own reference
    return true;
  }

  void deliver(link& l, channel ch, incoming msg) {
    ++stats.messages_received;
    stats.bytes_received += msg->size;
    if (closing) return end(l);
    ev.on_message(*l.key, ch, std::move(msg));
  }

  static awaitable<void> read_loop(std::shared_ptr<state> st, std::shared_ptr<link> l) {
    auto hello_prefix = co_await read_prefix(*l);
    if (!hello_prefix) co_return st->end(*l);
    auto first = co_await read_whole(*l, *hello_prefix, channel_prefix_bytes + hello_bytes_max);
    if (!first || !st->accept_hello(*l, (*first)->bytes())) co_return st->end(*l);
    for (;;) {
      auto p = co_await read_prefix(*l);
      if (!p) co_return st->end(*l);
      const auto ch = p->ch();
      if (ch == channel::offer || ch == channel::grant || ch == channel::piece) {
        if (!co_await st->on_framing(l, *p)) co_return;
        continue;
      }
      if (ch != channel::membership && ch != channel::averaging) {
        st->refuse(hex(*l->key), "bad_channel", "a message with an unknown channel prefix");
        co_return st->end(*l);
      }
      if (p->length() > large_message_bytes) {
        st->broken(*l, "a large message sent whole, without an offer");
        co_return;
      }
      auto msg = co_await read_whole(*l, *p, large_message_bytes);
      if (!msg) co_return st->end(*l);
      if (l->closed) co_return;
      st->deliver(*l, ch, std::move(*msg));
      if (l->closed) co_return;
    }
  }

  bool accept_hello(link& l, std::span<const std::uint8_t> bytes) {
    const auto who = l.conn.remote_address() + " (" + hex(l.conn.remote_key()) + ")";
    if (bytes.size() < channel_prefix_bytes || bytes[0] != 0) {
      refuse(who, "bad_hello", "the first message is not a hello");
      return false;
    }
    std::string why;
    auto h = decode_hello(bytes.subspan(channel_prefix_bytes), why);
    if (!h) {
      refuse(who, "bad_hello", why);
      return false;
    }
    if (l.conn.remote_key() == self.public_key_bytes()) return false;  // dialled ourselves
    if (auto diff = describe_difference(cfg.own.tensors, h->tensors); !diff.empty()) {
      refuse(who, "manifest", "averages another model: " + diff);
      return false;
    }
    if (h->algorithm != cfg.own.algorithm) {
      refuse(who, "algorithm",
             "averages with " + h->algorithm + ", this node with " + cfg.own.algorithm);
      return false;
    }
    if (closing) return false;
    const auto key = l.conn.remote_key();
    const bool first = ready.count(key) == 0;
    l.key = key;
    l.ready = true;
    ready.emplace(key, links_entry(l));
    if (!l.dial_address.empty()) flush_pending(l, l.dial_address);
    ev.on_ready(key, *h, first);
    return true;
  }

  std::shared_ptr<link> links_entry(const link& l) {
    for (auto& p : links)
      if (p.get() == &l) return p;
    return nullptr;
  }

  void flush_pending(link& l, const std::string& address) {
    auto it = pending.find(address);
    if (it == pending.end()) return;
    for (auto& m : it->second)
      enqueue(l, std::move(m));
    pending.erase(it);
  }

  // The link is finished: drop it from every table, tell the node if its peer is gone.
  void end(link& l) {
    if (l.closed) return;
    l.closed = true;
    l.wake.cancel();
    std::erase_if(offers, [&](const auto& p) { return p.get() == &l; });
    // Frees the slot for the next offer.
    l.assembling.reset();
    l.piece.reset();
    l.slot.reset();
    if (auto r = std::move(l.streaming)) r->on_cut();
    // A closed link holds no payloads while its coroutines wind down.
    stats.dropped += l.small.size() + l.large.size();
    l.small.clear();
    l.large.clear();
    if (!l.ready && !l.dial_address.empty()) drop_pending(l.dial_address);
    if (l.ready) {
      for (auto [it, e] = ready.equal_range(*l.key); it != e; ++it) {
        if (it->second.get() == &l) {
          ready.erase(it);
          break;
        }
      }
    }
    auto kept = links_entry(l);
    std::erase_if(links, [&](const auto& p) { return p.get() == &l; });
    if (kept) asio::co_spawn(ex, close_link(kept), rethrow_failure);
  }

  static awaitable<void> close_link(std::shared_ptr<link> l) { co_await l->conn.close(); }

  void drop_pending(const std::string& address) {
    auto it = pending.find(address);
    if (it == pending.end()) return;
    stats.dropped += it->second.size();
    pending.erase(it);
  }

  static awaitable<void> dial(std::shared_ptr<state> st, std::string address,
                              std::optional<public_key> key) {
    ++st->stats.dials;
    auto failed = [&](const std::string& why) {
      ++st->stats.dials_failed;
      st->drop_pending(address);
      st->refuse(address, "dial", why);
    };
    const auto parts = split_host_port(address);
    if (!parts || parts->second.empty()) co_return failed("not a host:port address");
    asio::ip::tcp::resolver resolver(st->ex);
    auto [ec, found] = co_await resolver.async_resolve(parts->first, parts->second,
                                                       asio::as_tuple(asio::use_awaitable));
    if (ec || found.empty()) co_return failed("cannot resolve: " + ec.message());
    auto cfg = st->cfg.connection;
    cfg.handshake.expected_peer = key;
    auto c = co_await transport::dial(found.begin()->endpoint(), st->self, cfg);
    if (st->closing) co_return;
    if (!c) co_return failed(c.error().message());
    auto l = std::make_shared<link>(st->ex, std::move(*c));
    l->dial_address = address;
    st->start(std::move(l));
  }
};

peers::peers(asio::any_io_executor executor, const transport::identity& self, peers_config config,
             peer_events events)
    : state_(std::make_shared<state>(std::move(executor), self, std::move(config),
                                     std::move(events))) {}

peers::~peers() {
  close_all();
}

void peers::adopt(transport::connection c) {
  if (state_->closing) return;
  state_->start(std::make_shared<link>(state_->ex, std::move(c)));
}

void peers::send(const std::optional<public_key>& key, const std::string& address, outgoing msg) {
  auto& st = *state_;
  if (st.closing) return;
  if (key) {
    // The newest ready connection: an older one may be half-open to a process that restarted.
    if (auto [first, last] = st.ready.equal_range(*key); first != last) {
      st.enqueue(*std::prev(last)->second, std::move(msg));
      return;
    }
  }
  if (address.empty() || address == st.cfg.own.address) {
    ++st.stats.dropped;
    return;
  }
  auto it = st.pending.find(address);
  if (it == st.pending.end()) {
    if (st.pending.size() >= st.cfg.dials_max) {
      ++st.stats.dropped;
      return;
    }
    it = st.pending.emplace(address, std::deque<outgoing>{}).first;
    asio::co_spawn(st.ex, state::dial(state_, address, key), rethrow_failure);
  }
  if (it->second.size() >= st.cfg.pending_max) {
    ++st.stats.dropped;
    return;
  }
  it->second.push_back(std::move(msg));
}

std::size_t peers::connected_peers() const {
  std::size_t n = 0;
  for (auto it = state_->ready.begin(); it != state_->ready.end();
       it = state_->ready.upper_bound(it->first))
    ++n;
  return n;
}

bool peers::queued(const public_key& key, const void* what) const {
  const auto [first, last] = state_->ready.equal_range(key);
  if (first == last) return false;
  for (const auto& m : std::prev(last)->second->large)  // the newest: the one send() uses
    if (m->what == what && m->owner && !m->owner->expired()) return true;
  return false;
}

std::size_t peers::offers_waiting() const noexcept {
  return state_->offers.size();
}

const peers_stats& peers::stats() const noexcept {
  return state_->stats;
}

void peers::close_peer(const public_key& key) {
  auto& st = *state_;
  std::vector<std::shared_ptr<link>> of_key;
  for (auto [it, e] = st.ready.equal_range(key); it != e; ++it)
    of_key.push_back(it->second);
  for (const auto& l : of_key)
    st.end(*l);
}

void peers::close_all() {
  auto& st = *state_;
  if (st.closing) return;
  st.closing = true;
  st.pending.clear();
  const auto links = st.links;
  for (const auto& l : links)
    st.end(*l);
}

}  // namespace mws::runtime::detail
