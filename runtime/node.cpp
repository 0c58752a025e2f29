#include "runtime/node.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include "runtime/detail/spawn.hpp"

#include "gossip/codec.hpp"
#include "gossip/membership.hpp"
#include "gossip/membership_codec.hpp"
#include "gossip/node.hpp"
#include "gpu/backend.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/detail/peers.hpp"
#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "transport/listener.hpp"

namespace mws::runtime {

void throw_exception_from_error(const node_error& e, const boost::source_location&) {
  throw std::runtime_error(e.message);
}

namespace {

namespace asio = boost::asio;
using detail::channel;
using transport::public_key;

std::string hex_id(const public_key& k) {
  return transport::peer_id::of(k).to_string();
}

gossip::node_key to_node_key(const public_key& k) {
  gossip::node_key n;
  n.bytes = k;
  return n;
}

gossip::manifest to_gossip_manifest(const manifest& m) {
  gossip::manifest out;
  for (const auto& t : m.tensors)
    out.push_back({t.name, t.type, static_cast<std::size_t>(t.numel())});
  return out;
}

// Tensor t of the estimate x / w, in its dtype, into `out`.
void write_estimate(const gossip::model& st, std::size_t t, std::span<std::byte> out) {
  const auto v = st.x[t];
  for (std::size_t k = 0; k < v.numel; ++k) {
    const double x = static_cast<double>(gpu::load_as_f32(v.data, v.type, k));
    gpu::store_from_f32(out.data(), v.type, k, static_cast<float>(x / st.w));
  }
}

std::uint64_t random_u64() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd();
}

}  // namespace

node_result<asio::ip::tcp::endpoint> parse_endpoint(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return node_error{"'" + address + "' is not host:port"};
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  if (ec) return node_error{"'" + address + "': '" + host + "' is not a numeric IP address"};
  const auto port_text = address.substr(colon + 1);
  char* end = nullptr;
  const auto port = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port > 65535) {
    return node_error{"'" + address + "': '" + port_text + "' is not a port number"};
  }
  return asio::ip::tcp::endpoint(ip, static_cast<unsigned short>(port));
}

struct node::impl : gossip::membership_sink, gossip::action_sink {
  asio::any_io_executor ex;
  node_options opts;
  transport::identity self;
  logger log;
  manifest spec;
  gossip::manifest gspec;
  std::unique_ptr<gpu::backend> backend;
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
  std::optional<checkpoint_store> checkpoints;
  gossip::time_us next_checkpoint_us = 0;
  std::uint64_t messages_refused = 0, peers_refused = 0;
  bool running = false, stopped = false;

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
    static constexpr std::array<std::uint8_t, 8> zeros{};
    detail::outgoing out;
    out.head = detail::channel_prefix(channel::averaging);
    gossip::wire_layout layout;
    const auto header = gossip::encode_header(msg, gspec, &layout);
    out.head.insert(out.head.end(), header.begin(), header.end());
    if (msg.tensors) {
      std::size_t at = layout.header_bytes;
      for (std::size_t t = 0; t < msg.tensors->size(); ++t) {
        const auto v = (*msg.tensors)[t];
        const auto bytes = v.numel * gpu::dtype_size(v.type);
        if (layout.tensor_offsets[t] > at)
          out.tail.emplace_back(zeros.data(), layout.tensor_offsets[t] - at);
        out.tail.emplace_back(v.data, bytes);
        at = layout.tensor_offsets[t] + bytes;
      }
      if (layout.total_bytes > at) out.tail.emplace_back(zeros.data(), layout.total_bytes - at);
      out.keep = msg.tensors;
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
        metrics.add("mws_member_events_total", 1, {{"kind", "joined"}});
        log.log(log_level::info, "peer_joined", {{"peer", peer}, {"address", e.address}});
        emit(node_event::kind::peer_joined, peer);
        break;
      case k::failed:
      case k::left:
        averaging->on_link_down(id, now_us(), *this);
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
    auto m = gossip::decode(body, gspec, msg);
    if (!m) return refused_message(key, m.error());
    if (auto ec = averaging->on_message(id_of(key), *m, now, *this)) refused_message(key, ec);
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
    model_file out(spec);
    for (std::size_t t = 0; t < spec.tensors.size(); ++t) {
      std::memcpy(out.tensor_bytes(t).data(), st.x[t].data, out.tensor_bytes(t).size());
    }
    char weight[64];
    std::snprintf(weight, sizeof weight, "%a", st.w);
    out.metadata()["mws.weight"] = weight;
    out.metadata()["mws.node"] = self.id().to_string();
    auto saved = checkpoints->save(out);
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
      if (n.checkpoints && now >= n.next_checkpoint_us) {
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

void register_endpoints(node::impl& n, const node& self);

namespace {

// Opens the checkpoint store and, when it holds a checkpoint of this model, starts from it.
node_result<void> resume(node::impl& n, gossip::model& m) {
  auto store = checkpoint_store::open(n.opts.data_dir);
  if (!store) return node_error{"data directory: " + store.error().message};
  n.checkpoints = std::move(*store);
  auto loaded = n.checkpoints->load_latest();
  if (!loaded) return node_error{"data directory: " + loaded.error().message};
  for (const auto& skipped : loaded->skipped) {
    n.log.log(log_level::warn, "checkpoint_skipped", {{"why", skipped.reason.message}});
  }
  if (!loaded->latest) return {};
  const auto& ckpt = *loaded->latest;
  if (auto diff = describe_difference(n.spec, ckpt.model.spec()); !diff.empty()) {
    return node_error{ckpt.path.string() + " holds another model: " + diff};
  }
  const auto w = ckpt.model.metadata().find("mws.weight");
  const double weight =
      w == ckpt.model.metadata().end() ? 0.0 : std::strtod(w->second.c_str(), nullptr);
  if (!std::isfinite(weight) || !(weight > 0.0)) {
    return node_error{ckpt.path.string() + ": no valid mws.weight in its metadata"};
  }
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t) {
    const auto src = ckpt.model.tensor_bytes(t);
    std::memcpy(m.x.mutable_view(t).data, src.data(), src.size());
  }
  m.w = weight;
  n.log.log(log_level::info, "resumed", {{"checkpoint", ckpt.path.string()}});
  return {};
}

}  // namespace

void declare_metrics(metrics_registry& m) {
  using k = metrics_registry::kind;
  m.declare("mws_members_alive", k::gauge, "Members the node believes alive, itself included.");
  m.declare("mws_peers_connected", k::gauge, "Peers with an open, authenticated connection.");
  m.declare("mws_weight", k::gauge, "Push-sum weight w; the estimate is x / w.");
  m.declare("mws_messages_sent_total", k::counter, "Messages sent to peers.");
  m.declare("mws_messages_received_total", k::counter, "Messages received from peers.");
  m.declare("mws_bytes_sent_total", k::counter, "Bytes of messages sent, before encryption.");
  m.declare("mws_bytes_received_total", k::counter, "Bytes of messages received, decrypted.");
  m.declare("mws_messages_dropped_total", k::counter,
            "Messages not sent: a full queue or a failed dial.");
  m.declare("mws_messages_refused_total", k::counter, "Messages refused as malformed or foreign.");
  m.declare("mws_peers_refused_total", k::counter,
            "Connections refused or failed, by reason (handshake, manifest, dial, ...).");
  m.declare("mws_member_events_total", k::counter, "Membership changes seen, by kind.");
  m.declare("mws_local_updates_total", k::counter, "Local updates applied.");
  m.declare("mws_averaging_shares_total", k::counter, "Averaging messages emitted.");
  m.declare("mws_checkpoints_total", k::counter, "Checkpoints written.");
  m.declare("mws_checkpoints_failed_total", k::counter, "Checkpoints that could not be written.");
}

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

node::~node() {
  *impl_->alive = false;
  stop();
  if (impl_->links) impl_->links->close_all();
}

node_result<std::unique_ptr<node>> node::create(asio::any_io_executor executor,
                                                node_options options, model_file initial) {
  auto id = transport::load_or_create_identity(options.key_file);
  if (!id) {
    return node_error{"key file " + options.key_file.string() + ": " + id.error().message()};
  }
  if (options.tick_interval_us <= 0 || options.probe_interval_us <= 0) {
    return node_error{"intervals must be positive"};
  }
  auto p = std::make_unique<impl>(std::move(executor), std::move(options), std::move(*id));
  auto& n = *p;
  declare_metrics(n.metrics);
  n.spec = initial.spec();
  n.gspec = to_gossip_manifest(n.spec);
  n.backend = gpu::make_cpu_backend();
  auto stream = n.backend->make_stream();
  if (!stream) return node_error{"cannot create a CPU stream: " + stream.error().message()};
  n.stream = std::move(*stream);
  auto m = gossip::model::create(*n.backend, n.gspec, 1.0);
  if (!m) return node_error{"cannot allocate the model: " + m.error().message()};
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t) {
    const auto src = initial.tensor_bytes(t);
    std::memcpy(m->x.mutable_view(t).data, src.data(), src.size());
  }
  if (!n.opts.data_dir.empty()) {
    auto resumed = resume(n, *m);
    if (!resumed) return resumed.error();
  }
  const auto seed = n.opts.seed != 0 ? n.opts.seed : random_u64();
  gossip::config cfg;
  cfg.algo = gossip::algorithm::push_sum;
  cfg.tick_interval_us = n.opts.tick_interval_us;
  // Hold unacked running sums: receivers then keep no tensor per in-link (docs/MODES.md). TCP
  // loses nothing while a connection lives, so re-sends are rare and the timeout generous.
  cfg.hold_unacked = true;
  cfg.held_max = 1;  // one share in flight: the node's memory does not grow with its peers
  cfg.timeout_us = std::max<std::int64_t>(10 * n.opts.tick_interval_us, 2'000'000);
  cfg.seed = seed;
  n.averaging = gossip::make_node(cfg, std::move(*m), *n.backend, *n.stream);
  return std::unique_ptr<node>(new node(std::move(p)));
}

node_result<void> node::start() {
  auto& n = *impl_;
  if (n.running || n.stopped) return node_error{"the node was started already"};
  auto where = parse_endpoint(n.opts.listen);
  if (!where) return node_error{"listen address " + where.error().message};
  transport::listener_config lc;
  lc.connection.handshake.mesh_psk = n.opts.mesh_psk;
  lc.connection.handshake.allowlist = n.opts.allowlist;
  // A peer may run this far ahead of what the node has consumed, per connection: a node waiting
  // to receive a share (one at a time) holds at most this much of each other's.
  lc.connection.handshake.limits.frame_bytes_max = 1u << 20;
  lc.connection.handshake.limits.window_bytes = 4u << 20;
  auto l = transport::listener::open(n.ex, *where, n.self, lc);
  if (!l) {
    return node_error{"cannot listen on " + n.opts.listen + ": " + l.error().message()};
  }
  n.listener = std::move(*l);
  const auto bound = n.listener->local_endpoint();
  std::string advertise = n.opts.advertise;
  if (advertise.empty()) {
    advertise = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                        : bound.address().to_string();
    advertise += ":" + std::to_string(bound.port());
  }
  if (!n.opts.http_listen.empty()) {
    auto hw = parse_endpoint(n.opts.http_listen);
    if (!hw) return node_error{"HTTP address " + hw.error().message};
    n.http = std::make_unique<http_server>(n.ex);
    register_endpoints(n, *this);
    auto hb = n.http->listen(*hw);
    if (!hb) {
      return node_error{"cannot listen for HTTP on " + n.opts.http_listen + ": " +
                        hb.error().message()};
    }
    n.http_bound = *hb;
  }
  detail::peers_config pc;
  pc.connection = lc.connection;
  pc.own = {advertise, n.boot, n.spec};
  // The largest averaging message: every tensor plus padding and a header.
  pc.message_bytes_max = detail::channel_prefix_bytes + n.spec.total_bytes() +
                         8 * n.spec.tensors.size() + (std::size_t{1} << 20) + (64u << 20);
  n.links = std::make_unique<detail::peers>(
      n.ex, n.self, std::move(pc),
      detail::peer_events{
          [&n](const public_key& k, const hello& h, bool first) { n.on_ready(k, h, first); },
          [](const public_key&) {},
          [&n](const public_key& k, channel ch, detail::incoming m) {
            n.on_message(k, ch, std::move(m));
          },
          [&n](const std::string& who, const std::string& reason, const std::string& why) {
            n.on_refused(who, reason, why);
          }});
  gossip::membership_config mc;
  mc.self = to_node_key(n.self.public_key_bytes());
  mc.self_address = advertise;
  mc.seeds = n.opts.seeds;
  mc.probe_interval_us = n.opts.probe_interval_us;
  mc.probe_timeout_us = n.opts.probe_interval_us / 2;
  mc.seed = n.averaging->settings().seed ^ 0x9e3779b97f4a7c15ull;
  n.members = std::make_unique<gossip::membership>(mc);
  n.running = true;
  n.log.log(log_level::info, "node_started",
            {{"address", advertise},
             {"model", n.spec.summary()},
             {"seeds", std::to_string(n.opts.seeds.size())}});
  asio::co_spawn(n.ex,
                 n.listener->run([&n](transport::connection c) { n.links->adopt(std::move(c)); },
                                 [&n](const std::string& who, boost::system::error_code ec) {
                                   n.on_refused(who, "handshake", ec.message());
                                 }),
                 detail::rethrow_failure);
  const auto now = n.now_us();
  n.members->start(now, n);
  n.averaging->start(now, n);
  asio::co_spawn(n.ex, impl::tick_loop(&n, n.alive), detail::rethrow_failure);
  return {};
}

void node::stop() {
  auto& n = *impl_;
  if (n.stopped) return;
  n.stopped = true;
  if (n.running) {
    n.members->leave(n.now_us(), n);  // queued on open connections before they close
    n.save_checkpoint();
    n.log.log(log_level::info, "node_stopping", {});
  }
  const bool was_running = n.running;
  n.running = false;
  n.ticker.cancel();
  if (n.listener) n.listener->stop();
  if (n.http) n.http->stop();
  if (!n.links) return;
  if (!was_running || !*n.alive) return n.links->close_all();
  // Let the leave announcement go out on the open connections before closing them.
  asio::co_spawn(n.ex, impl::close_after_leave(&n, n.alive), detail::rethrow_failure);
}

node_result<void> node::apply_local_update(const model_file& delta, double weight_delta) {
  auto& n = *impl_;
  if (auto diff = describe_difference(n.spec, delta.spec()); !diff.empty()) {
    return node_error{"the update does not match the model: " + diff};
  }
  if (!std::isfinite(weight_delta) || n.averaging->state().w + weight_delta <= 0.0) {
    return node_error{"the weight update must be finite and leave a positive weight"};
  }
  std::vector<gpu::const_tensor_view> views;
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t) {
    const auto& s = n.gspec[t];
    views.emplace_back(delta.tensor_bytes(t).data(), s.numel, s.type, gpu::memory_space::host);
  }
  if (auto ec = n.averaging->apply_local_update(views, weight_delta, n.now_us())) {
    return node_error{"local update failed: " + ec.message()};
  }
  return {};
}

model_file node::estimate() const {
  const auto& n = *impl_;
  model_file out(n.spec);
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t)
    write_estimate(n.averaging->state(), t, out.tensor_bytes(t));
  return out;
}

std::string node::estimate_safetensors() const {
  const auto& n = *impl_;
  std::string out = safetensors_prefix(n.spec);
  std::size_t at = out.size();
  out.resize(at + n.spec.total_bytes());
  const auto data = std::as_writable_bytes(std::span(out));
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t) {
    const auto bytes = static_cast<std::size_t>(n.spec.tensors[t].bytes());
    write_estimate(n.averaging->state(), t, data.subspan(at, bytes));
    at += bytes;
  }
  return out;
}

node_status node::status() const {
  const auto& n = *impl_;
  node_status s;
  s.id = n.self.id().to_string();
  s.address = n.links ? n.members->settings().self_address : std::string{};
  s.members_alive = n.members ? n.members->alive_count() : 1;
  s.peers_connected = n.links ? n.links->connected_peers() : 0;
  s.weight = n.averaging->state().w;
  if (n.links) {
    const auto& ps = n.links->stats();
    s.messages_sent = ps.messages_sent;
    s.messages_received = ps.messages_received;
    s.bytes_sent = ps.bytes_sent;
    s.bytes_received = ps.bytes_received;
  }
  s.messages_refused = n.messages_refused;
  s.local_updates = n.averaging->stats().local_updates;
  s.peers_refused = n.peers_refused;
  return s;
}

const manifest& node::spec() const noexcept {
  return impl_->spec;
}

void node::subscribe(std::function<void(const node_event&)> handler) {
  impl_->subscribers.push_back(std::move(handler));
}

asio::ip::tcp::endpoint node::listen_endpoint() const {
  return impl_->listener ? impl_->listener->local_endpoint() : asio::ip::tcp::endpoint{};
}

std::optional<asio::ip::tcp::endpoint> node::http_endpoint() const {
  return impl_->http_bound;
}

std::string status_json(const node_status& s) {
  boost::json::object o;
  o["id"] = s.id;
  o["address"] = s.address;
  o["members_alive"] = s.members_alive;
  o["peers_connected"] = s.peers_connected;
  o["weight"] = s.weight;
  o["messages_sent"] = s.messages_sent;
  o["messages_received"] = s.messages_received;
  o["bytes_sent"] = s.bytes_sent;
  o["bytes_received"] = s.bytes_received;
  o["messages_refused"] = s.messages_refused;
  o["peers_refused"] = s.peers_refused;
  o["local_updates"] = s.local_updates;
  return boost::json::serialize(o) + "\n";
}

void register_endpoints(node::impl& n, const node& self) {
  n.http->route("/livez", [] { return http_response{200, "text/plain", "ok\n"}; });
  n.http->route("/readyz", [&n] {
    const bool ready = n.running && (n.opts.seeds.empty() || n.members->alive_count() > 1);
    return http_response{ready ? 200u : 503u, "text/plain", ready ? "ready\n" : "joining\n"};
  });
  n.http->route("/export", [&self] {
    return http_response{200, "application/octet-stream", self.estimate_safetensors()};
  });
  n.http->route("/status", [&self] {
    return http_response{200, "application/json", status_json(self.status())};
  });
  n.http->route("/metrics", [&n, &self] {
    const auto s = self.status();
    auto& r = n.metrics;
    r.set("mws_members_alive", static_cast<double>(s.members_alive));
    r.set("mws_peers_connected", static_cast<double>(s.peers_connected));
    r.set("mws_weight", s.weight);
    const auto counter = [&r](std::string_view name, double v) {
      r.add(name, v - r.value(name));  // counters mirror totals kept elsewhere
    };
    counter("mws_messages_sent_total", static_cast<double>(s.messages_sent));
    counter("mws_messages_received_total", static_cast<double>(s.messages_received));
    counter("mws_bytes_sent_total", static_cast<double>(s.bytes_sent));
    counter("mws_bytes_received_total", static_cast<double>(s.bytes_received));
    counter("mws_messages_dropped_total", static_cast<double>(n.links->stats().dropped));
    counter("mws_local_updates_total", static_cast<double>(s.local_updates));
    counter("mws_averaging_shares_total", static_cast<double>(n.averaging->stats().sent));
    return http_response{200, "text/plain; version=0.0.4", r.render()};
  });
}

}  // namespace mws::runtime
