#include "runtime/node.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "runtime/detail/atomic_file.hpp"
#include "runtime/detail/node_impl.hpp"

namespace mws::runtime {

void throw_exception_from_error(const node_error& e, const boost::source_location&) {
  throw std::runtime_error(e.message);
}

using detail::declare_metrics;
using detail::register_endpoints;

namespace {

bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

node_result<unsigned short> parse_port(const std::string& address, const std::string& text) {
  const bool digits = !text.empty() && text.size() <= 5 && all_digits(text);
  const auto port = digits ? std::strtoul(text.c_str(), nullptr, 10) : 0;
  if (!digits || port > 65535) {
    return node_error{"'" + address + "': '" + text + "' is not a port number"};
  }
  return static_cast<unsigned short>(port);
}

// A DNS name as RFC 1123 allows: dot-separated labels of letters, digits and '-', none
// starting or ending with '-', each at most 63 bytes, 253 in all, the last not all digits (so
// that "127.1" or "123" is not taken for a name and resolved as an abbreviated IP address).
bool is_host_name(std::string_view h) {
  if (h.empty() || h.size() > 253 || all_digits(h.substr(h.rfind('.') + 1))) return false;
  std::size_t label = 0;
  char previous = '.';
  for (const char c : h) {
    if (c == '.') {
      if (label == 0 || previous == '-') return false;
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || (c == '-' && label > 0)) {
      if (++label > 63) return false;
    } else {
      return false;
    }
    previous = c;
  }
  return label > 0 && previous != '-';
}

}  // namespace

node_result<asio::ip::tcp::endpoint> parse_endpoint(const std::string& address) {
  const auto parts = detail::split_host_port(address);
  if (!parts) return node_error{"'" + address + "' is not host:port"};
  const auto& [host, port_text] = *parts;
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  if (ec) return node_error{"'" + address + "': '" + host + "' is not a numeric IP address"};
  auto port = parse_port(address, port_text);
  if (!port) return port.error();
  return asio::ip::tcp::endpoint(ip, *port);
}

node_result<void> check_address(const std::string& address) {
  if (address.size() > gossip::max_address_bytes) {
    return node_error{"an address of more than " + std::to_string(gossip::max_address_bytes) +
                      " bytes"};
  }
  const auto parts = detail::split_host_port(address);
  if (!parts) return node_error{"'" + address + "' is not host:port"};
  const auto& [host, port_text] = *parts;
  const bool bracketed = address.front() == '[';
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  if (!ec && ip.is_v6() != bracketed) {
    return node_error{"'" + address + "': write an IPv6 address in brackets, [addr]:port, and " +
                      "nothing else"};
  }
  if (ec && (bracketed || !is_host_name(host))) {
    return node_error{"'" + address + "': '" + host + "' is neither an IP address nor a host name"};
  }
  auto port = parse_port(address, port_text);
  if (!port) return port.error();
  if (*port == 0) return node_error{"'" + address + "': port 0 cannot be dialled"};
  return {};
}

std::string to_string(averaging a) {
  return a == averaging::exact ? "exact" : "push-sum";
}

std::optional<averaging> parse_averaging(std::string_view name) {
  if (name == "push-sum") return averaging::push_sum;
  if (name == "exact") return averaging::exact;
  return std::nullopt;
}

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
  if (auto ec = n.upload(m.x, ckpt.model)) {
    return node_error{"cannot load the checkpoint into the model: " + ec.message()};
  }
  m.w = weight;
  n.log.log(log_level::info, "resumed", {{"checkpoint", ckpt.path.string()}});
  return {};
}

}  // namespace

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
  if (options.tick_interval_us <= 0 || options.probe_interval_us <= 0 ||
      options.epoch_interval_us <= 0) {
    return node_error{"intervals must be positive"};
  }
  for (const auto& s : options.seeds) {
    if (auto e = check_address(s); !e) return node_error{"seed " + e.error().message};
  }
  if (!options.advertise.empty()) {
    if (auto e = check_address(options.advertise); !e) {
      return node_error{"advertised address " + e.error().message};
    }
  }
  auto p = std::make_unique<impl>(std::move(executor), std::move(options), std::move(*id));
  auto& n = *p;
  declare_metrics(n.metrics);
  n.spec = initial.spec();
  n.gspec = to_gossip_manifest(n.spec);
  auto chosen = gpu::make_backend(n.opts.device);
  if (!chosen.chosen) return node_error{"--device cuda: " + chosen.reason};
  n.backend = std::move(chosen.chosen);
  n.backend_reason = std::move(chosen.reason);
  auto stream = n.backend->make_stream();
  if (!stream) return node_error{"cannot create a stream: " + stream.error().message()};
  n.stream = std::move(*stream);
  auto m = gossip::model::create(*n.backend, n.gspec, 1.0);
  if (!m) return node_error{"cannot allocate the model: " + m.error().message()};
  if (auto ec = n.upload(m->x, initial)) {
    return node_error{"cannot load the model into the backend: " + ec.message()};
  }
  // x holds it now: the file's bytes go before a checkpoint's come in (peak 2x the model, not 3x).
  { const model_file consumed = std::move(initial); }
  if (!n.opts.data_dir.empty()) {
    auto resumed = resume(n, *m);
    if (!resumed) return resumed.error();
  }
  const auto seed = n.opts.seed != 0 ? n.opts.seed : random_u64();
  gossip::config cfg;
  cfg.algo = gossip::algorithm::push_sum;
  cfg.tick_interval_us = n.opts.tick_interval_us;
  if (n.exact()) {
    // Members come from the membership, epoch by epoch (impl::update_members); self is 0.
    cfg.algo = gossip::algorithm::exact;
    cfg.peers = {gossip::peer_id{0}};
    cfg.exact_epochs = 0;
    cfg.epoch_interval_us = n.opts.epoch_interval_us;
    cfg.stall_resends_max = 5;
  }
  // Hold unacked running sums: receivers then keep no tensor per in-link (docs/MODES.md). TCP
  // loses nothing while a connection lives, so re-sends are rare and the timeout generous.
  cfg.hold_unacked = true;
  cfg.held_max = 1;  // one share in flight: the node's memory does not grow with its peers
  // A peer that stays a member but answers nothing for this many re-sends (about 10 s) loses
  // its share rather than blocking this node's averaging (TCP loses nothing while it is up).
  cfg.held_resends_max = 5;
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
  // Many members may share one address (a NAT, or a test mesh on loopback), each with up to two
  // connections to us (both sides may dial at once): the transport's default of 8 per address
  // kept the 8th node of a loopback mesh out.
  lc.connections_per_address_max = 64;
  auto l = transport::listener::open(n.ex, *where, n.self, lc);
  if (!l) {
    return node_error{"cannot listen on " + n.opts.listen + ": " + l.error().message()};
  }
  n.listener = std::move(*l);
  const auto bound = n.listener->local_endpoint();
  std::string advertise = n.opts.advertise;
  if (advertise.empty() && bound.address().is_unspecified()) {
    return node_error{"listening on " + n.opts.listen +
                      " (every interface): give --advertise host:port, the address peers dial"};
  }
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
  pc.own = {advertise, n.boot, n.spec, to_string(n.opts.algorithm)};
  // The largest averaging message: every tensor plus padding and a header.
  pc.message_bytes_max = detail::channel_prefix_bytes + n.spec.total_bytes() +
                         8 * n.spec.tensors.size() + (std::size_t{1} << 20) + (64u << 20);
  n.links = std::make_unique<detail::peers>(
      n.ex, n.self, std::move(pc),
      detail::peer_events{
          [&n](const public_key& k, const hello& h, bool first) { n.on_ready(k, h, first); },
          [&n](const public_key& k, channel ch, detail::incoming m) {
            n.on_message(k, ch, std::move(m));
          },
          [&n](const std::string& who, const std::string& reason, const std::string& why) {
            n.on_refused(who, reason, why);
          },
          [&n](const public_key& k, std::span<const std::uint8_t> first, std::size_t total) {
            return n.stream_share(k, first, total);
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
             {"backend", std::string(n.backend->name())},
             {"backend_why", n.backend_reason},
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
    n.checkpoint_waiting = false;     // the one below
    n.cut_share();
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
  // The CPU backend reads the update where it is; a GPU gets a device copy, released only
  // once the stream has used it.
  std::vector<gpu::const_tensor_view> views;
  gossip::tensor_set staged;
  if (detail::host_backend(*n.backend)) {
    for (std::size_t t = 0; t < n.spec.tensors.size(); ++t) {
      views.emplace_back(delta.tensor_bytes(t).data(), n.gspec[t].numel, n.gspec[t].type,
                         gpu::memory_space::host);
    }
  } else {
    auto device = gossip::tensor_set::allocate(*n.backend, n.gspec);
    if (!device) return node_error{"cannot allocate the update: " + device.error().message()};
    staged = std::move(*device);
    if (auto ec = n.upload(staged, delta)) {
      return node_error{"cannot load the update into the backend: " + ec.message()};
    }
    for (std::size_t t = 0; t < n.spec.tensors.size(); ++t)
      views.push_back(staged[t]);
  }
  if (auto ec = n.averaging->apply_local_update(views, weight_delta, n.now_us())) {
    return node_error{"local update failed: " + ec.message()};
  }
  if (auto ec = n.stream->synchronize()) return node_error{"local update failed: " + ec.message()};
  return {};
}

namespace {
const node_error no_share{
    "this node holds no share of the mesh's mass now (exact mode: it handed it to a member "
    "that failed); the next epoch gives it one"};
}  // namespace

node_result<model_file> node::estimate() const {
  auto& n = *impl_;
  if (!(n.averaging->state().w > 0.0)) return no_share;
  auto x = n.host_x();
  if (!x) return node_error{"cannot read the model from the backend: " + x.error().message()};
  model_file out(n.spec);
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t)
    n.estimate_of(t, 0, x->tensors[t], out.tensor_bytes(t));
  return out;
}

node_result<std::string> node::estimate_safetensors() const {
  std::string out;
  out.reserve(impl_->spec.total_bytes() + 4096);
  auto written = detail::write_estimate_file(*impl_, [&](std::span<const std::byte> piece) {
    out.append(reinterpret_cast<const char*>(piece.data()), piece.size());
    return true;
  });
  if (!written) return written.error();
  return node_result<std::string>(boost::system::in_place_value, std::move(out));
}

namespace detail {

node_result<void> write_estimate_file(node::impl& n, const byte_sink& sink) {
  const double w = n.averaging->state().w;
  if (!(w > 0.0)) return no_share;
  auto x = n.host_x();
  if (!x) return node_error{"cannot read the model from the backend: " + x.error().message()};
  const std::string prefix = safetensors_prefix(n.spec);
  if (!sink(std::as_bytes(std::span(prefix)))) return {};
  constexpr std::size_t piece_bytes = std::size_t{4} << 20;  // a multiple of every dtype's size
  std::vector<std::byte> piece(std::min<std::size_t>(piece_bytes, n.spec.total_bytes()));
  for (std::size_t t = 0; t < n.spec.tensors.size(); ++t) {
    const auto tensor = x->tensors[t];
    const auto width = gpu::dtype_size(n.gspec[t].type);
    for (std::size_t at = 0; at < tensor.size(); at += piece.size()) {
      const auto part = tensor.subspan(at, std::min(piece.size(), tensor.size() - at));
      const auto out = std::span(piece).first(part.size());
      n.estimate_of(t, at / width, part, out);
      if (!sink(out)) return {};
    }
  }
  return {};
}

node_result<std::shared_ptr<http_file>> estimate_to_temporary_file(node::impl& n) {
  std::error_code ec;
  const auto dir =
      n.opts.data_dir.empty() ? std::filesystem::temp_directory_path(ec) : n.opts.data_dir;
  if (ec) {
    const char* tmpdir = std::getenv("TMPDIR");
    return node_error{"no temporary directory (TMPDIR=" + std::string(tmpdir ? tmpdir : "") +
                      "): " + ec.message()};
  }
  const int fd = open_unnamed_file(dir);
  if (fd < 0) {
    return node_error{"cannot create a temporary file in " + dir.string() + ": " +
                      std::strerror(errno)};
  }
  auto file = std::make_shared<http_file>(fd);
  int failed = 0;
  auto written = write_estimate_file(n, [&](std::span<const std::byte> piece) {
    if (!write_all(fd, piece)) failed = errno;
    return failed == 0;
  });
  if (!written) return written.error();
  if (failed != 0)
    return node_error{"cannot write the export: " + std::string(std::strerror(failed))};
  return file;
}

}  // namespace detail

node_status node::status() const {
  const auto& n = *impl_;
  node_status s;
  s.id = n.self.id().to_string();
  s.address = n.links ? n.members->settings().self_address : std::string{};
  s.members_alive = n.members ? n.members->alive_count() : 1;
  s.peers_connected = n.links ? n.links->connected_peers() : 0;
  s.weight = n.averaging->state().w;
  s.backend = std::string(n.backend->name());
  const auto& a = n.averaging->stats();
  s.epochs_completed = n.exact() ? a.round : 0;
  s.epochs_abandoned = a.epochs_abandoned;
  s.epoch_step = a.step;
  s.stalls = a.stalls;
  s.aborts_sent = a.aborts_sent;
  s.gives_returned = a.gives_returned;
  s.late_values = a.late_values;
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
  s.shares_streamed = n.shares_streamed;
  s.shares_cut = n.averaging->stats().shares_cut;
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

}  // namespace mws::runtime
