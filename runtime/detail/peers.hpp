// The node's connections: one or more authenticated transport connections per peer key, each
// with a bounded outbox, a writer and a reader coroutine, opened by the listener or dialled on
// demand when a message goes to a member (or seed address) without one.
//
// Every connection starts with the hello exchange (runtime/hello.hpp): each side sends its hello
// first, and a peer whose hello is malformed, whose manifest differs, or who is this node itself
// is refused (reported to on_refused) before any of its messages reach the protocol.
//
// Framing on a connection, one transport message each, all starting with an 8-byte prefix: the
// channel byte, then that transport message's length (prefix included) as a 56-bit
// little-endian integer.
// - membership / averaging: a whole message of at most large_message_bytes (1 MiB).
// - offer (8-byte body: a length L): the sender has a large message of L bytes to send.
// - grant (no body): the receiver has allocated a buffer of exactly L bytes for it.
// - piece (no body; its length field says 8 + n): the next transport message is the next n
//   bytes of the granted large message, nothing else (so the receiver reads them straight into
//   its buffer). After the grant the large message goes in pieces of at most piece_bytes, and
//   the sender sends any small message it has between two pieces. The large message's own
//   bytes start with a membership or averaging prefix whose length field is L.
// So membership messages never wait behind a model-sized message (at most one piece and the
// transport's window), and a receiver admits large messages one slot at a time without
// stopping to read its links: a sender waits for its grant, not in the receiver's window. A
// receiver takes pieces once it has granted. Small messages may thus overtake a large one sent
// before them, on either channel; the protocols above tolerate reordering (the simulator
// reorders too).
// A piece carries at most large_message_bytes, the first at least the large message's prefix.
// On its first piece, an averaging message is offered to on_large, which may take it piece by
// piece (a large_receiver: the node mixes a share while it arrives, holding one piece, not the
// model); else it goes to on_message whole, in a buffer the handler may keep; tensor bytes stay
// 8-aligned. Anything else (an unknown channel, a piece or grant out of turn, a second offer
// before the first large message arrived, a size outside the limits) ends the link, reported
// to on_refused with reason bad_channel or bad_framing.
//
// Bounds: a message is at most config.message_bytes_max; an outbox holds at most outbox_max
// small and large_outbox_max large messages, and the queue of a dial in progress pending_max;
// what does not fit is dropped and counted (the protocols above tolerate loss). A link is cut
// (reason stalled) when a granted message stops arriving, or an offer is not granted, for
// large_message_timeout. Internal to runtime/; all calls on the node's loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>

#include "runtime/hello.hpp"
#include "transport/connection.hpp"

namespace mws::runtime::detail {

enum class channel : std::uint8_t {
  hello = 0,
  membership = 1,
  averaging = 2,
  offer = 3,
  grant = 4,
  piece = 5,
};
inline constexpr std::size_t channel_prefix_bytes = 8;
// Messages larger than this are offered and sent in pieces; part of the protocol (hello v2).
inline constexpr std::size_t large_message_bytes = std::size_t{1} << 20;

// One message to send: `head` (starting with the channel prefix, whose length field send()
// fills in) then the `tail` spans, whose memory `keep` owns until the message is written.
// A large message may instead name its tail's owner weakly (`owner`): it is then sent only if
// the owner is still alive when its turn comes, and held from its offer on; else dropped
// (counted in peers_stats::superseded). A share its sender has let go of (acked through an
// earlier copy, or given up) thus never keeps its memory alive in a queue.
struct outgoing {
  std::vector<std::uint8_t> head;
  std::vector<boost::asio::const_buffer> tail;
  std::shared_ptr<const void> keep;
  const void* what = nullptr;  // what a large message carries, for queued() (may be null)
  std::optional<std::weak_ptr<const void>> owner{};
  std::shared_ptr<const void> held{};  // the owner, from the offer on (peers sets it)
};

// A message as received: the whole buffer (prefix included). A handler may keep `data` (shared)
// beyond the call; the large-message slot goes with the message_buffer.
struct message_buffer {
  std::shared_ptr<std::uint8_t[]> data;
  std::size_t size = 0;
  std::shared_ptr<void> slot;  // a large message's receive slot
  std::span<const std::uint8_t> bytes() const noexcept { return {data.get(), size}; }
};
using incoming = std::shared_ptr<const message_buffer>;

// Takes a large message piece by piece (peer_events::on_large), on the loop thread.
class large_receiver {
 public:
  virtual ~large_receiver() = default;
  // The next bytes of the message, the first piece's included (prefix and all), in order;
  // `last` with its last byte. The span is valid during the call only.
  virtual void on_bytes(std::span<const std::uint8_t> bytes, bool last) = 0;
  // The link ended before the last byte; no call follows.
  virtual void on_cut() = 0;
};

struct peer_events {
  // A connection of `key` passed the hello; `first` when no other connection of it was ready.
  std::function<void(const transport::public_key& key, const hello& h, bool first)> on_ready;
  std::function<void(const transport::public_key& key, channel ch, incoming msg)> on_message;
  // A peer (by key or address) was refused or a dial failed; `why` is a sentence for the log.
  std::function<void(const std::string& who, const std::string& reason, const std::string& why)>
      on_refused;
  // The first piece of a large averaging message of `total` bytes (may be empty: everything
  // goes to on_message): a receiver for the whole message, pieces included, or null.
  std::function<std::shared_ptr<large_receiver>(
      const transport::public_key& key, std::span<const std::uint8_t> first, std::size_t total)>
      on_large;
};

struct peers_config {
  transport::connection_config connection;
  hello own;                          // sent first on every connection
  std::size_t message_bytes_max = 0;  // largest message accepted after the hello
  std::size_t outbox_max = 64;        // small messages queued per connection
  std::size_t large_outbox_max = 4;   // large messages queued per connection
  std::size_t pending_max = 64;       // messages queued per dial in progress
  std::size_t dials_max = 64;         // dials in progress
  // Messages over large_message_bytes (model shares) are offered and granted (see above), at
  // most large_messages_max at a time, counting those being handled or streamed: keep no
  // message_buffer beyond the call, or granting stalls (keep its `data` instead, bounding what
  // is kept by other means).
  std::size_t large_messages_max = 1;
  std::size_t piece_bytes = large_message_bytes;  // per piece sent, 8 to large_message_bytes
  // A granted message that stops arriving, or our offer not granted, for this long: cut.
  std::chrono::milliseconds large_message_timeout{120'000};
};

struct peers_stats {
  std::uint64_t dropped = 0;  // messages not sent: outbox or dial queue full, dial failed
  std::uint64_t dials = 0;
  std::uint64_t dials_failed = 0;
  std::uint64_t granted = 0;         // large messages granted to peers
  std::uint64_t superseded = 0;      // large messages whose owner had gone before their turn
  std::uint64_t bytes_sent = 0;      // of whole messages, prefix included; no offers, grants
  std::uint64_t bytes_received = 0;  // or piece prefixes
  std::uint64_t messages_sent = 0;
  std::uint64_t messages_received = 0;
};

class peers {
 public:
  peers(boost::asio::any_io_executor executor, const transport::identity& self, peers_config config,
        peer_events events);
  ~peers();
  peers(const peers&) = delete;
  peers& operator=(const peers&) = delete;

  // Takes a connection the listener accepted.
  void adopt(transport::connection c);
  // Sends to `key` if a ready connection exists; otherwise dials `address` (expecting `key`
  // when given) and sends once the hello is through.
  void send(const std::optional<transport::public_key>& key, const std::string& address,
            outgoing msg);
  std::size_t connected_peers() const;
  // Whether a large message carrying `what`, with a live owner (outgoing::owner), waits or is
  // on its way to `key` on the connection send() would use.
  bool queued(const transport::public_key& key, const void* what) const;
  // Peers' offers of large messages waiting for a slot now.
  std::size_t offers_waiting() const noexcept;
  const peers_stats& stats() const noexcept;
  // Closes every connection of `key`, dropping what is queued on them (a peer declared failed:
  // a share queued for it is not held until its link gives up). It may dial again later.
  void close_peer(const transport::public_key& key);
  // Closes every connection (gracefully, in the background) and stops dialling.
  void close_all();

  struct state;  // shared with the connection coroutines

 private:
  std::shared_ptr<state> state_;
};

// "host:port" or "[v6 host]:port" split into host and port text (brackets removed), or nothing
// when there is no colon or no host. The port text may be empty or not a number.
std::optional<std::pair<std::string, std::string>> split_host_port(const std::string& address);

// The 8-byte prefix of a message on `ch`, its length field zero until send() sets it.
std::vector<std::uint8_t> channel_prefix(channel ch);

}  // namespace mws::runtime::detail
