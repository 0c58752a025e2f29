#include "runtime/detail/peers.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include "runtime/detail/spawn.hpp"

#include "transport/error.hpp"

namespace mws::runtime::detail {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using transport::public_key;

struct link {
  explicit link(asio::any_io_executor ex, transport::connection c)
      : conn(std::move(c)),
        wake(ex, asio::steady_timer::time_point::max()),
        budget_wake(ex, asio::steady_timer::time_point::max()) {}
  transport::connection conn;
  std::deque<outgoing> outbox;
  asio::steady_timer wake;         // cancelled when the outbox gains a message or the link closes
  asio::steady_timer budget_wake;  // cancelled when a large-message slot frees up
  std::optional<public_key> key;
  std::string dial_address;  // the address it was dialled at ("" when accepted)
  std::uint64_t messages_read = 0;
  bool ready = false;
  bool closed = false;
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
  std::size_t large_in_use = 0;  // large messages being received or being handled

  // Releases a large-message slot when the buffer that held it dies.
  struct large_slot {
    explicit large_slot(std::shared_ptr<state> s) : st(std::move(s)) {}
    large_slot(const large_slot&) = delete;
    large_slot& operator=(const large_slot&) = delete;
    std::shared_ptr<state> st;
    ~large_slot() {
      --st->large_in_use;
      for (const auto& l : st->links)
        l->budget_wake.cancel();
    }
  };

  // Ends the link when it has read no more than `read` messages after `after`: a peer that
  // sends no hello, or takes the large-message slot and stalls, is cut off, not waited for.
  static awaitable<void> deadline(std::shared_ptr<state> st, std::shared_ptr<link> l,
                                  std::chrono::milliseconds after, std::uint64_t read,
                                  const char* what) {
    asio::steady_timer t(st->ex, after);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    if (l->closed || l->messages_read > read) co_return;
    st->refuse(l->conn.remote_address() + " (" + hex(l->conn.remote_key()) + ")", "stalled",
               std::string(what) + " within " + std::to_string(after.count()) + " ms");
    st->end(*l);
  }

  // Waits for a large-message slot; false when the link closed meanwhile.
  static awaitable<bool> take_large_slot(std::shared_ptr<state> st, std::shared_ptr<link> l) {
    while (st->large_in_use >= st->cfg.large_messages_max && !l->closed && !st->closing) {
      l->budget_wake.expires_at(asio::steady_timer::time_point::max());
      co_await l->budget_wake.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (l->closed || st->closing) co_return false;
    ++st->large_in_use;
    co_return true;
  }

  // Reads one whole message of at most `bytes_max` into a buffer of exactly its size. A large
  // one first waits for a slot (config.large_messages_max), so a node assembles only so many
  // model-sized buffers at once; the transport's window holds the senders back meanwhile.
  static awaitable<boost::system::result<incoming>> read_message(std::shared_ptr<state> st,
                                                                 std::shared_ptr<link> l,
                                                                 std::size_t bytes_max) {
    auto& c = l->conn;
    std::array<std::uint8_t, channel_prefix_bytes> prefix{};
    std::size_t have = 0;
    while (have < prefix.size()) {
      auto r = co_await c.receive(asio::buffer(prefix.data() + have, prefix.size() - have));
      if (!r) co_return r.error();
      have += r->bytes;
      if (r->end_of_message && have < prefix.size()) co_return transport::errc::frame_truncated;
    }
    const auto total = get_length(prefix.data());
    if (total < channel_prefix_bytes || total > bytes_max) {
      co_return transport::errc::frame_too_large;
    }
    auto buf = std::make_shared<message_buffer>();
    if (total > st->cfg.large_message_bytes) {
      if (!co_await take_large_slot(st, l)) co_return transport::errc::closed_by_peer;
      buf->slot = std::make_shared<large_slot>(st);
      asio::co_spawn(st->ex,
                     deadline(st, l, st->cfg.large_message_timeout, l->messages_read,
                              "a large message not completed"),
                     rethrow_failure);
    }
    buf->data = std::make_shared_for_overwrite<std::uint8_t[]>(total);
    buf->size = total;
    std::memcpy(buf->data.get(), prefix.data(), prefix.size());
    bool ended = total == have;
    while (have < total) {
      auto r = co_await c.receive(asio::buffer(buf->data.get() + have, total - have));
      if (!r) co_return r.error();
      have += r->bytes;
      ended = r->end_of_message;
      if (ended && have < total) co_return transport::errc::frame_truncated;
    }
    if (!ended) co_return transport::errc::frame_too_large;  // longer than its length field
    ++l->messages_read;
    co_return incoming(std::move(buf));
  }

  state(asio::any_io_executor e, const transport::identity& id, peers_config c, peer_events v)
      : ex(std::move(e)), self(id), cfg(std::move(c)), ev(std::move(v)) {
    hello_bytes = channel_prefix(channel::hello);
    const auto body = encode_hello(cfg.own);
    hello_bytes.insert(hello_bytes.end(), body.begin(), body.end());
    put_length(hello_bytes, hello_bytes.size());
  }

  void refuse(const std::string& who, const std::string& reason, const std::string& why) {
    if (!closing && ev.on_refused) ev.on_refused(who, reason, why);
  }

  void enqueue(link& l, outgoing msg) {
    if (l.closed || l.outbox.size() >= cfg.outbox_max) {
      ++stats.dropped;
      return;
    }
    put_length(msg.head, msg.head.size() + asio::buffer_size(msg.tail));
    l.outbox.push_back(std::move(msg));
    l.wake.cancel();
  }

  void start(std::shared_ptr<link> l) {
    links.push_back(l);
    auto self_ptr = shared_from_this();
    asio::co_spawn(ex, write_loop(self_ptr, l), rethrow_failure);
    asio::co_spawn(ex, read_loop(self_ptr, l), rethrow_failure);
    asio::co_spawn(ex, deadline(self_ptr, l, cfg.connection.handshake_timeout, 0, "no hello"),
                   rethrow_failure);
  }

  static awaitable<void> write_loop(std::shared_ptr<state> st, std::shared_ptr<link> l) {
    const asio::const_buffer hello_part(st->hello_bytes.data(), st->hello_bytes.size());
    if (auto ec = co_await l->conn.send({&hello_part, 1})) co_return st->end(*l);
    for (;;) {
      while (l->outbox.empty() && !l->closed) {
        l->wake.expires_at(asio::steady_timer::time_point::max());
        co_await l->wake.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      if (l->closed) co_return;
      outgoing m = std::move(l->outbox.front());
      l->outbox.pop_front();
      std::vector<asio::const_buffer> parts;
      parts.reserve(1 + m.tail.size());
      parts.emplace_back(m.head.data(), m.head.size());
      parts.insert(parts.end(), m.tail.begin(), m.tail.end());
      if (auto ec = co_await l->conn.send(parts)) co_return st->end(*l);
      ++st->stats.messages_sent;
      st->stats.bytes_sent += asio::buffer_size(parts);
    }
  }

  static awaitable<void> read_loop(std::shared_ptr<state> st, std::shared_ptr<link> l) {
    auto first = co_await read_message(st, l, channel_prefix_bytes + hello_bytes_max);
    if (!first || !st->accept_hello(*l, (*first)->bytes())) co_return st->end(*l);
    for (;;) {
      auto msg = co_await read_message(st, l, st->cfg.message_bytes_max);
      if (!msg) co_return st->end(*l);
      const auto bytes = (*msg)->bytes();
      const auto ch = static_cast<channel>(bytes.size() >= channel_prefix_bytes ? bytes[0] : 0);
      if (bytes.size() < channel_prefix_bytes ||
          (ch != channel::membership && ch != channel::averaging)) {
        st->refuse(hex(*l->key), "bad_channel", "a message with an unknown channel prefix");
        co_return st->end(*l);
      }
      ++st->stats.messages_received;
      st->stats.bytes_received += bytes.size();
      if (st->closing) co_return st->end(*l);
      st->ev.on_message(*l->key, ch, std::move(*msg));
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
    l.budget_wake.cancel();
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

const peers_stats& peers::stats() const noexcept {
  return state_->stats;
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
