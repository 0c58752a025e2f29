// The node's state and the glue between its state machines, its connections and its loop:
// node.cpp drives it, node_http.cpp serves it over HTTP. Internal to runtime/.
#pragma once

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <span>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "gossip/codec.hpp"
#include "gossip/membership.hpp"
#include "gossip/membership_codec.hpp"
#include "gossip/node.hpp"
#include "gpu/backend.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/detail/peers.hpp"
#include "runtime/detail/spawn.hpp"
#include "runtime/detail/staging.hpp"
#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node.hpp"
#include "transport/listener.hpp"

namespace mws::runtime {
namespace detail {

namespace asio = boost::asio;
using transport::public_key;

inline std::string hex_id(const public_key& k) {
  return transport::peer_id::of(k).to_string();
}

inline gossip::node_key to_node_key(const public_key& k) {
  gossip::node_key n;
  n.bytes = k;
  return n;
}

inline gossip::manifest to_gossip_manifest(const manifest& m) {
  gossip::manifest out;
  for (const auto& t : m.tensors)
    out.push_back({t.name, t.type, static_cast<std::size_t>(t.numel())});
  return out;
}

// The estimate x / w of one tensor (x's bytes in `type`) into `out`, in the same dtype.
inline void write_estimate(std::span<const std::byte> x, gpu::dtype type, double w,
                           std::span<std::byte> out) {
  const auto numel = x.size() / gpu::dtype_size(type);
  for (std::size_t k = 0; k < numel; ++k) {
    const double v = static_cast<double>(gpu::load_as_f32(x.data(), type, k));
    gpu::store_from_f32(out.data(), type, k, static_cast<float>(v / w));
  }
}

inline std::uint64_t random_u64() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd();
}

// The metric families of a node, declared once (node.cpp); node_http.cpp serves them.
void declare_metrics(metrics_registry& m);

}  // namespace detail

namespace asio = boost::asio;
using detail::channel;
using detail::hex_id;
using detail::random_u64;
using detail::to_gossip_manifest;
using detail::to_node_key;
using detail::write_estimate;
using transport::public_key;

struct node::impl : gossip::membership_sink, gossip::action_sink {
  asio::any_io_executor ex;
  node_options opts;
  transport::identity self;
  logger log;
  manifest spec;
  gossip::manifest gspec;
  std::unique_ptr<gpu::backend> backend;
  std::string backend_reason;  // why this backend: logged with node_started
  std::unique_ptr<gpu::stream> stream;
  std::unique_ptr<gossip::averaging_node> averaging;
  std::unique_ptr<gossip::membership> members;
  std::unique_ptr<detail::peers> links;
  std::unique_ptr<transport::listener> listener;
  std::unique_ptr<http_server> http;
  std::optional<asio::ip::tcp::endpoint> http_bound;
  asio::steady_timer ticker;
  metrics_registry metrics;
  std::vector<std::function<void(const node_event&)>> subscribers;
  std::chrono::steady_clock::time_point epoch = std::chrono::steady_clock::now();
  std::uint64_t boot = random_u64();
  // Peers as the averaging machine numbers them (self is 0).
  std::map<public_key, gossip::peer_id> ids;
  std::vector<public_key> keys{public_key{}};
  std::map<public_key, std::string> addresses;  // from hellos and membership
  std::map<public_key, std::uint64_t> boots;    // from hellos: a change means a restart
  std::set<public_key> live;                    // members alive (or suspected), self excluded
  std::optional<checkpoint_store> checkpoints;
  gossip::time_us next_checkpoint_us = 0;
  std::uint64_t messages_refused = 0, peers_refused = 0, shares_streamed = 0;
  bool running = false, stopped = false;
  std::weak_ptr<detail::large_receiver> streaming;  // the share mixed while it arrives
  gpu::buffer share_scratch;        // on a GPU: device copies of its parts (share_stream.cpp)
  bool checkpoint_waiting = false;  // a checkpoint is due: written when the share ends

  impl(asio::any_io_executor e, node_options o, transport::identity id)
      : ex(std::move(e)),
        opts(std::move(o)),
        self(std::move(id)),
        log(opts.log_min, opts.log_sink),
        ticker(ex) {
    log.set_context("node", self.id().to_string());
  }

  gossip::time_us now_us() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 epoch)
        .count();
  }

  bool exact() const noexcept { return opts.algorithm == averaging::exact; }

  // Exact mode: the next epochs' members are the live membership, self included, ordered by
  // public key, which every member computes alike; the view fingerprints that list.
  void update_members() {
    if (!exact()) return;
    std::vector<public_key> sorted(live.begin(), live.end());
    sorted.push_back(self.public_key_bytes());
    std::sort(sorted.begin(), sorted.end());
    std::vector<gossip::peer_id> order;
    std::uint64_t view = 0xcbf29ce484222325ull;  // FNV-1a over the keys
    for (const auto& k : sorted) {
      order.push_back(k == self.public_key_bytes() ? gossip::peer_id{0} : id_of(k));
      for (const auto b : k)
        view = (view ^ b) * 0x100000001b3ull;
    }
    if (auto ec = averaging->set_members(order, view, now_us(), *this)) {
      log.log(log_level::error, "members_refused", {{"error", ec.message()}});
    }
  }

  // Tensors of a model file into the backend's memory (dst: one per manifest entry).
  boost::system::error_code upload(gossip::tensor_set& dst, const model_file& src) {
    std::vector<std::span<const std::byte>> bytes;
    for (std::size_t t = 0; t < spec.tensors.size(); ++t)
      bytes.push_back(src.tensor_bytes(t));
    return detail::upload(*backend, *stream, dst, bytes);
  }
  // x readable from the host (on the CPU backend, x itself: read it before the loop moves on).
  gpu::result<detail::host_tensors> host_x() {
    return detail::download(*backend, *stream, averaging->state().x, nullptr);
  }

  gossip::peer_id id_of(const public_key& k) {
    auto [it, fresh] = ids.emplace(k, gossip::peer_id{static_cast<std::uint32_t>(keys.size())});
    if (fresh) {
      keys.push_back(k);
      (void)averaging->add_peer(it->second);
    }
    return it->second;
  }

  void emit(node_event::kind what, std::string peer, std::string detail = {},
            std::string reason = {}) {
    const node_event e{what, std::move(peer), std::move(detail), std::move(reason)};
    for (const auto& s : subscribers)
      s(e);
  }

  // --- membership_sink and action_sink: the state machines' outputs ---

  void send(const gossip::destination& to, gossip::swim::message msg) override {
    detail::outgoing out;
    out.head = detail::channel_prefix(channel::membership);
    const auto body = gossip::encode_membership(msg);
    out.head.insert(out.head.end(), body.begin(), body.end());
    std::optional<public_key> key;
    if (to.id) key = to.id->bytes;
    links->send(key, to.address, std::move(out));
  }

  void send(gossip::peer_id to, gossip::message msg) override {
    const auto& key = keys.at(to.value);
    // A re-send of a share that still waits in the queue (its receiver is busy) would keep it
    // alive after its ack, beside the next share: one copy on its way is enough.
    if (!exact() && msg.tensors && links->queued(key, msg.tensors.get())) return;
    static constexpr std::array<std::uint8_t, 8> zeros{};
    detail::outgoing out;
    out.head = detail::channel_prefix(channel::averaging);
    gossip::wire_layout layout;
    const auto header = gossip::encode_header(msg, gspec, &layout);
    out.head.insert(out.head.end(), header.begin(), header.end());
    if (msg.tensors) {
      // On a GPU the payload comes to pinned host memory first (its bytes are final then).
      auto host = detail::download(*backend, *stream, *msg.tensors, msg.tensors);
      if (!host) {
        log.log(log_level::error, "send_failed", {{"error", host.error().message()}});
        metrics.add("mws_backend_errors_total", 1);
        return;
      }
      std::size_t at = layout.header_bytes;
      for (std::size_t t = 0; t < msg.tensors->size(); ++t) {
        const auto bytes = host->tensors[t];
        if (layout.tensor_offsets[t] > at)
          out.tail.emplace_back(zeros.data(), layout.tensor_offsets[t] - at);
        out.tail.emplace_back(bytes.data(), bytes.size());
        at = layout.tensor_offsets[t] + bytes.size();
      }
      if (layout.total_bytes > at) out.tail.emplace_back(zeros.data(), layout.total_bytes - at);
      out.keep = std::move(host->keep);
      out.what = msg.tensors.get();
      // Push-sum holds a share until it is acked (or given up): a queued copy goes only while
      // it does. On the CPU the payload is the bytes; on a GPU, `keep` is their host copy.
      if (!exact() &&
          layout.total_bytes + detail::channel_prefix_bytes > detail::large_message_bytes) {
        out.owner = msg.tensors;
        if (detail::host_backend(*backend)) out.keep.reset();
      }
    }
    auto addr = addresses.find(key);
    links->send(key, addr == addresses.end() ? std::string{} : addr->second, std::move(out));
  }

  void arm_timer(gossip::time_us) override {}  // the ticker calls both machines often enough

  void on_event(const gossip::membership_event& e) override {
    const public_key& key = e.id.bytes;
    const auto peer = hex_id(key);
    if (!e.address.empty()) addresses[key] = e.address;
    const auto id = id_of(key);
    using k = gossip::membership_event::kind;
    switch (e.what) {
      case k::joined:
      case k::alive_again:
        averaging->on_link_up(id, now_us(), *this);
        live.insert(key);
        update_members();
        metrics.add("mws_member_events_total", 1, {{"kind", "joined"}});
        log.log(log_level::info, "peer_joined", {{"peer", peer}, {"address", e.address}});
        emit(node_event::kind::peer_joined, peer);
        break;
      case k::failed:
      case k::left:
        averaging->on_link_down(id, now_us(), *this);
        // Its held share was given up: what is queued for it goes too (a peer that left
        // closes its own).
        if (e.what == k::failed) links->close_peer(key);
        live.erase(key);
        update_members();
        metrics.add("mws_member_events_total", 1,
                    {{"kind", e.what == k::failed ? "failed" : "left"}});
        log.log(log_level::warn, e.what == k::failed ? "peer_failed" : "peer_left",
                {{"peer", peer}});
        emit(e.what == k::failed ? node_event::kind::peer_failed : node_event::kind::peer_left,
             peer);
        break;
      case k::suspected:
        log.log(log_level::info, "peer_suspected", {{"peer", peer}});
        break;
    }
  }

  // --- peers' events: connections ---

  void on_ready(const public_key& key, const hello& h, bool first) {
    addresses[key] = h.address;
    const auto id = id_of(key);
    auto [known, fresh] = boots.emplace(key, h.boot);
    if (!fresh && known->second != h.boot) {
      // The peer restarted and lost its link state; ours must start over too, or its new
      // running sums (seq 1, 2, ...) would be ignored as old.
      known->second = h.boot;
      cut_share(&key);
      (void)averaging->reset_peer(id);
      log.log(log_level::info, "peer_restarted", {{"peer", hex_id(key)}});
    }
    if (first) averaging->on_link_up(id, now_us(), *this);
    log.log(log_level::debug, "peer_connected", {{"peer", hex_id(key)}, {"address", h.address}});
  }

  void on_message(const public_key& key, channel ch, detail::incoming msg) {
    const auto body = msg->bytes().subspan(detail::channel_prefix_bytes);
    const auto now = now_us();
    if (ch == channel::membership) {
      auto m = gossip::decode_membership(body);
      if (!m) return refused_message(key, m.error());
      if (log.enabled(log_level::debug)) {
        log.log(log_level::debug, "membership_message",
                {{"peer", hex_id(key)}, {"kind", std::to_string(m->index())}});
      }
      members->on_message(to_node_key(key), *m, now, *this);
      return;
    }
    // Stopping: the final checkpoint is written; a share applied now would be acked and then
    // lost with the process. Unacked, its sender gives it up or re-sends it to our successor.
    if (stopped) return;
    // The node may keep the payload by reference (exact mode buffers values for later steps:
    // per sender, step and view, of the running epoch and of one later one, as it kept copies
    // before); the large-message slot is released when this returns either way, so that the
    // values it waits for can come in.
    auto m = gossip::decode(body, gspec, msg->data);
    if (!m) return refused_message(key, m.error());
    auto payload = detail::to_backend(*backend, *stream, m->tensors, gspec);
    if (!payload) {
      log.log(log_level::error, "receive_failed", {{"error", payload.error().message()}});
      metrics.add("mws_backend_errors_total", 1);
      return;
    }
    m->tensors = std::move(*payload);
    if (auto ec = averaging->on_message(id_of(key), *m, now, *this)) refused_message(key, ec);
    // A device copy of the payload may still be read by work on the stream.
    if (!detail::host_backend(*backend)) (void)stream->synchronize();
  }

  // The first piece of a large averaging message: a push-sum share is mixed while it streams in
  // (share_stream.cpp); null: it is assembled whole for on_message.
  std::shared_ptr<detail::large_receiver> stream_share(const public_key& key,
                                                       std::span<const std::uint8_t> first,
                                                       std::size_t total);
  // The share streaming in (from `from`, or from anyone), if any, is completed from the node's
  // estimate now: the node stops, or the peer restarted.
  void cut_share(const public_key* from = nullptr);
  // A streamed share ended (whole or cut): a checkpoint that waited for it is written.
  void share_closed();

  // x / w of elements first, first + 1, ... of tensor t (x's bytes in `x`) into `out`, each
  // divided by its own weight: a share streaming in weighs the elements it has mixed more.
  void estimate_of(std::size_t t, std::size_t first, std::span<const std::byte> x,
                   std::span<std::byte> out) const {
    const auto type = gspec[t].type;
    const auto width = gpu::dtype_size(type);
    const auto at = averaging->receiving();
    const double w = averaging->state().w;
    const auto n = x.size() / width;
    const auto mixed_end = t < at.tensor ? first + n : t == at.tensor ? at.element : 0;
    const auto mixed = std::min(n, mixed_end > first ? mixed_end - first : 0) * width;
    write_estimate(x.first(mixed), type, w + at.weight, out.first(mixed));
    write_estimate(x.subspan(mixed), type, w, out.subspan(mixed));
  }

  void refused_message(const public_key& key, boost::system::error_code ec) {
    ++messages_refused;
    metrics.add("mws_messages_refused_total", 1);
    log.log(log_level::warn, "message_refused", {{"peer", hex_id(key)}, {"error", ec.message()}});
  }

  void on_refused(const std::string& who, const std::string& reason, const std::string& why) {
    ++peers_refused;
    metrics.add("mws_peers_refused_total", 1, {{"reason", reason}});
    log.log(reason == "dial" ? log_level::info : log_level::warn, "peer_refused",
            {{"peer", who}, {"reason", reason}, {"why", why}});
    emit(node_event::kind::peer_refused, who, why, reason);
  }

  // Writes x and w (not the running sums: docs/MODES.md says why) as the next checkpoint.
  void save_checkpoint() {
    if (!checkpoints) return;
    const auto& st = averaging->state();
    // Exact mode: an extra member holds nothing between handing its share over and getting
    // its part back; the previous checkpoint stands.
    if (!(st.w > 0.0)) return;
    auto x = host_x();
    if (!x) {
      log.log(log_level::error, "checkpoint_failed", {{"why", x.error().message()}});
      metrics.add("mws_checkpoints_failed_total", 1);
      return;
    }
    char weight[64];
    std::snprintf(weight, sizeof weight, "%a", st.w);
    const std::map<std::string, std::string> meta{{"mws.weight", weight},
                                                  {"mws.node", self.id().to_string()}};
    // Written from x where it lies (on a GPU, from its download): no copy of the model.
    auto saved = checkpoints->save(model_view(spec, x->tensors, meta));
    if (!saved) {
      log.log(log_level::error, "checkpoint_failed", {{"why", saved.error().message}});
      metrics.add("mws_checkpoints_failed_total", 1);
      return;
    }
    metrics.add("mws_checkpoints_total", 1);
    log.log(log_level::debug, "checkpoint_saved", {{"path", saved->path.string()}});
  }

  static asio::awaitable<void> tick_loop(impl* self_ptr, std::shared_ptr<bool> alive) {
    auto& n = *self_ptr;
    // Both machines tolerate early and repeated ticks: one fine-grained ticker serves them.
    const auto period = std::chrono::microseconds(
        std::min<std::int64_t>(10'000, std::max<std::int64_t>(1000, n.opts.tick_interval_us / 2)));
    while (*alive && n.running) {
      n.ticker.expires_after(period);
      co_await n.ticker.async_wait(asio::as_tuple(asio::use_awaitable));
      if (!*alive || !n.running) co_return;
      const auto now = n.now_us();
      n.members->on_tick(now, n);
      n.averaging->on_tick(now, n);
      // x mixes two weights while a share streams in: the checkpoint waits for its end.
      if (n.checkpoints && now >= n.next_checkpoint_us && n.averaging->receiving().weight == 0.0) {
        n.save_checkpoint();
        n.next_checkpoint_us = now + n.opts.checkpoint_interval_us;
      }
    }
  }

  static asio::awaitable<void> close_after_leave(impl* self_ptr, std::shared_ptr<bool> alive) {
    asio::steady_timer t(self_ptr->ex, std::chrono::milliseconds(300));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    if (*alive) self_ptr->links->close_all();
  }

  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
};

namespace detail {
// Routes /livez /readyz /status /export /metrics to `n` (node_http.cpp).
void register_endpoints(node::impl& n, const node& self);

// The estimate as a safetensors file, handed to `sink` piece by piece (a few MiB at most each,
// so that no copy of the whole model is made); stops when sink returns false (the error is
// then the sink's to report). Fails while the node holds no share (exact mode, w = 0).
using byte_sink = std::function<bool(std::span<const std::byte>)>;
node_result<void> write_estimate_file(node::impl& n, const byte_sink& sink);

// write_estimate_file into an unnamed temporary file (in the data directory, else the system's
// temporary directory), for /export to stream from.
node_result<std::shared_ptr<http_file>> estimate_to_temporary_file(node::impl& n);
}  // namespace detail

}  // namespace mws::runtime
