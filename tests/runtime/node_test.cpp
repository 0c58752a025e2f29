#include "runtime/node.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>

#include <boost/asio/io_context.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>

#include "gossip/codec.hpp"
#include "gpu/backend.hpp"
#include "run_until.hpp"
#include "runtime/detail/peers.hpp"
#include "runtime/hello.hpp"
#include "temp_dir.hpp"
#include "transport/connection.hpp"

namespace mws::runtime {
namespace {

using test::run_until;
using test::temp_dir;

// A one-tensor f32 model with the given values.
model_file f32_model(std::vector<float> values, std::string name = "w") {
  manifest m;
  m.tensors = {{std::move(name), gpu::dtype::f32, {values.size()}}};
  model_file f(m);
  std::memcpy(f.tensor_bytes(0).data(), values.data(), values.size() * 4);
  return f;
}

std::vector<float> values_of(const model_file& f) {
  std::vector<float> v(f.spec().tensors[0].numel());
  std::memcpy(v.data(), f.tensor_bytes(0).data(), v.size() * 4);
  return v;
}

struct mesh {
  temp_dir dir;
  boost::asio::io_context io;
  std::vector<std::unique_ptr<node>> nodes;

  node& add(model_file m, std::function<void(node_options&)> tweak = {}) {
    node_options o;
    o.key_file = dir.path / ("key-" + std::to_string(nodes.size()));
    o.tick_interval_us = 5'000;
    o.probe_interval_us = 200'000;
    o.log_min = log_level::error;
    if (!nodes.empty()) {
      const auto ep = nodes[0]->listen_endpoint();
      o.seeds = {"127.0.0.1:" + std::to_string(ep.port())};
    }
    if (tweak) tweak(o);
    auto n = node::create(io.get_executor(), o, std::move(m));
    REQUIRE_MESSAGE(n.has_value(), (n ? "" : n.error().message));
    auto started = (*n)->start();
    REQUIRE_MESSAGE(started.has_value(), (started ? "" : started.error().message));
    nodes.push_back(std::move(*n));
    return *nodes.back();
  }

  double worst_error(const std::vector<float>& exact) const {
    double worst = 0.0;
    for (const auto& n : nodes) {
      const auto v = values_of(n->estimate().value());
      for (std::size_t k = 0; k < v.size(); ++k) {
        worst =
            std::max(worst, std::abs(static_cast<double>(v[k]) - static_cast<double>(exact[k])));
      }
    }
    return worst;
  }

  ~mesh() {
    for (auto& n : nodes)
      n->stop();
    io.run_for(std::chrono::milliseconds(500));
  }
};

TEST_CASE("three embedded nodes reach the exact mean, and follow a local update") {
  mesh m;
  m.add(f32_model({1, 2, 3, 4}));
  m.add(f32_model({4, 4, 4, 4}));
  m.add(f32_model({-2, 0, 2, 7}));
  const std::vector<float> exact{1, 2, 3, 5};
  CHECK(run_until(m.io, [&] { return m.worst_error(exact) < 1e-5; }));
  CHECK(run_until(m.io, [&] {
    return std::all_of(m.nodes.begin(), m.nodes.end(),
                       [](const auto& n) { return n->status().members_alive == 3; });
  }));
  // x += delta on one node moves the mesh's mean by delta / 3.
  REQUIRE(m.nodes[1]->apply_local_update(f32_model({3, 3, 3, 3})).has_value());
  const std::vector<float> moved{2, 3, 4, 6};
  CHECK(run_until(m.io, [&] { return m.worst_error(moved) < 1e-5; }));
  CHECK(m.nodes[1]->status().local_updates == 1);
  // /export's bytes are the estimate as a safetensors file.
  const auto text = m.nodes[2]->estimate_safetensors().value();
  auto parsed = parse_safetensors(std::as_bytes(std::span(text)));
  REQUIRE(parsed.has_value());
  CHECK(values_of(*parsed) == values_of(m.nodes[2]->estimate().value()));
}

// 300,000 values (1.2 MB, more than a piece): shares stream in and are mixed as they arrive.
std::vector<float> large_values(float scale) {
  std::vector<float> v(300'000);
  for (std::size_t k = 0; k < v.size(); ++k)
    v[k] = scale * static_cast<float>(1 + k % 13);
  return v;
}

double worst_relative(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0.0;
  for (std::size_t k = 0; k < got.size(); ++k) {
    const auto w = static_cast<double>(want[k]);
    worst = std::max(worst, std::abs(static_cast<double>(got[k]) - w) / std::abs(w));
  }
  return worst;
}

// Three nodes of 1, 2 and 6 times large_values reach 3 times it, mixing shares as they stream in.
void check_streamed_mean(mesh& m, const std::function<void(node_options&)>& tweak = {}) {
  for (float scale : {1.0f, 2.0f, 6.0f})
    m.add(f32_model(large_values(scale)), tweak);
  const auto exact = large_values(3.0f);
  CHECK(run_until(
      m.io,
      [&] {
        return std::all_of(m.nodes.begin(), m.nodes.end(), [&](const auto& n) {
          return worst_relative(values_of(n->estimate().value()), exact) < 1e-5;
        });
      },
      std::chrono::milliseconds(200)));
  for (const auto& n : m.nodes)
    CHECK(n->status().shares_streamed > 0);
}

TEST_CASE("nodes mix model-sized shares while they stream in, and reach the exact mean") {
  mesh m;
  check_streamed_mean(m);
}

TEST_CASE("read while a share streams in, or cut short by a stop, the estimate stays whole") {
  // Equal models: every estimate, at any moment, must be exactly that model. One that divided
  // the elements a share has mixed by the wrong weight would be off by the share's part.
  mesh m;
  const auto v = large_values(1.0f);
  for (int i = 0; i < 3; ++i)
    m.add(f32_model(v));
  double worst = 0.0;
  std::uint64_t streamed = 0;
  run_until(
      m.io,
      [&] {
        for (const auto& n : m.nodes)
          worst = std::max(worst, worst_relative(values_of(n->estimate().value()), v));
        streamed = 0;
        for (const auto& n : m.nodes)
          streamed += n->status().shares_streamed;
        return streamed >= 30;
      },
      std::chrono::milliseconds(30));
  CHECK(streamed >= 30);
  CHECK(worst < 1e-6);
  // Stopping nodes one by one cuts the shares they are receiving; the rest go on.
  std::uint64_t cut = 0;
  for (const auto& n : m.nodes) {
    n->stop();
    m.io.run_for(std::chrono::milliseconds(400));  // its links close: shares from it are cut
    for (const auto& other : m.nodes)
      CHECK(worst_relative(values_of(other->estimate().value()), v) < 1e-6);
  }
  for (const auto& n : m.nodes)
    cut += n->status().shares_cut;
  MESSAGE("shares cut: " << cut);
}

// A peer that speaks the wire by hand: its hello, then a push-sum running sum of `share` (weight
// `weight`, seq 1) offered and sent in pieces of 1 MiB, of which only the first `pieces` go out;
// `poison` puts a NaN in the second piece. The connection stays open (in `keep`) unless `close`.
struct raw_share {
  std::vector<float> share;
  double weight = 0.5;
  std::size_t pieces = 1;
  bool poison = false;
  bool close = true;

  // The bytes, prefixes and all, and how many of the share's values the first piece carries.
  std::pair<std::vector<std::vector<std::uint8_t>>, std::size_t> messages() const {
    namespace d = detail;
    const gossip::manifest spec{{"w", gpu::dtype::f32, share.size()}};
    gossip::message m;
    m.header.kind = gossip::message_kind::push_sum_running;
    m.header.seq = 1;
    m.header.weight = weight;
    std::vector<gpu::const_tensor_view> views{
        {share.data(), share.size(), gpu::dtype::f32, gpu::memory_space::host}};
    m.tensors = std::make_shared<const gossip::tensor_set>(
        gossip::tensor_set::borrow(std::move(views), nullptr));
    gossip::wire_layout layout;
    (void)gossip::encode_header(m, spec, &layout);
    auto body = gossip::encode(m, spec);
    std::vector<std::uint8_t> whole = framed(d::channel::averaging, body);
    if (poison) {
      const float nan = std::nanf("");
      std::memcpy(whole.data() + d::large_message_bytes + 4, &nan, 4);
    }
    std::vector<std::vector<std::uint8_t>> out;
    hello h{"127.0.0.1:1", 1, {}, "push-sum"};
    h.tensors.tensors = {{"w", gpu::dtype::f32, {share.size()}}};
    out.push_back(framed(d::channel::hello, encode_hello(h)));
    std::vector<std::uint8_t> total(8);
    for (std::size_t i = 0; i < 8; ++i)
      total[i] = static_cast<std::uint8_t>(whole.size() >> (8 * i));
    out.push_back(framed(d::channel::offer, total));
    for (std::size_t k = 0; k < pieces; ++k) {
      const auto at = k * d::large_message_bytes;
      const auto n = std::min(d::large_message_bytes, whole.size() - at);
      out.push_back(prefix_of(d::channel::piece, d::channel_prefix_bytes + n));
      out.emplace_back(whole.begin() + static_cast<std::ptrdiff_t>(at),
                       whole.begin() + static_cast<std::ptrdiff_t>(at + n));
    }
    const auto first_values =
        (d::large_message_bytes - d::channel_prefix_bytes - layout.header_bytes) / 4;
    return {out, first_values};
  }

  static std::vector<std::uint8_t> prefix_of(detail::channel ch, std::size_t total) {
    std::vector<std::uint8_t> p = detail::channel_prefix(ch);
    for (std::size_t i = 1; i < detail::channel_prefix_bytes; ++i)
      p[i] = static_cast<std::uint8_t>(total >> (8 * (i - 1)));
    return p;
  }
  static std::vector<std::uint8_t> framed(detail::channel ch, const std::vector<std::uint8_t>& b) {
    auto m = prefix_of(ch, detail::channel_prefix_bytes + b.size());
    m.insert(m.end(), b.begin(), b.end());
    return m;
  }

  // Sends to the node at `port`; the first piece's value count.
  std::size_t send(boost::asio::io_context& io, std::uint16_t port,
                   std::shared_ptr<transport::connection>& keep, bool& sent) const {
    auto [msgs, first_values] = messages();
    boost::asio::co_spawn(
        io,
        [port, &keep, &sent, close = close,
         msgs = std::move(msgs)]() -> boost::asio::awaitable<void> {
          auto c = co_await transport::dial({boost::asio::ip::make_address("127.0.0.1"), port},
                                            transport::identity::generate(), {});
          if (!c) co_return;
          keep = std::make_shared<transport::connection>(std::move(*c));
          for (const auto& m : msgs) {
            const boost::asio::const_buffer part(m.data(), m.size());
            if (co_await keep->send({&part, 1})) co_return;
          }
          sent = true;
          if (close) co_await keep->close();
        },
        boost::asio::detached);
    return first_values;
  }
};

// One node of `v` (w = 1) taking a share of `u` times 0.5 cut after its first piece: the values
// the piece carried are mixed, the rest completed from the node's estimate.
void check_cut_share(const raw_share& how, std::uint64_t refused) {
  mesh m;
  const auto v = large_values(1.0f), u = large_values(4.0f);
  auto& n = m.add(f32_model(v), [](node_options& o) { o.tick_interval_us = 60'000'000; });
  auto share = how;
  share.share.resize(u.size());
  for (std::size_t k = 0; k < u.size(); ++k)
    share.share[k] = 0.5f * u[k];
  std::shared_ptr<transport::connection> raw;
  bool sent = false;
  const auto mixed = share.send(m.io, n.listen_endpoint().port(), raw, sent);
  REQUIRE(run_until(m.io, [&] { return n.status().shares_cut == 1; }));
  CHECK(sent);
  CHECK(n.status().shares_streamed == 1);
  CHECK(n.status().messages_refused == refused);
  // The node's first tick may send half of its (x, w) to the raw peer (which never acks it:
  // given up when the link ends): before the share came, while it came, after the cut, or not
  // at all. Each element that came is then the mean of v and u at weights 1 (or 1/2, if the send
  // came first) and 1/2; the others are v.
  const auto w = n.status().weight;
  CHECK((w == 1.5 || w == 1.0 || w == 0.75));
  const auto e = values_of(n.estimate().value());
  std::vector<float> after(v.size()), before(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) {
    after[k] = k < mixed ? (v[k] + 0.5f * u[k]) / 1.5f : v[k];
    before[k] = k < mixed ? (0.5f * v[k] + 0.5f * u[k]) / 1.0f : v[k];
  }
  const auto off = std::min(worst_relative(e, after), worst_relative(e, before));
  CHECK(off < 1e-6);
}

TEST_CASE("a share whose link ends mid-way is completed from the node's own estimate") {
  check_cut_share({.share = {}, .pieces = 1, .close = true}, 0);
}

TEST_CASE("a share with a non-finite value is refused mid-way and completed from the estimate") {
  check_cut_share({.share = {}, .pieces = 2, .poison = true, .close = false}, 1);
}

TEST_CASE("exact mode: five embedded nodes hold the same bits, the exact mean, after an epoch") {
  mesh m;
  const auto exact = [](node_options& o) {
    o.algorithm = averaging::exact;
    o.epoch_interval_us = 300'000;
  };
  for (int i = 0; i < 5; ++i) {
    const auto v = static_cast<float>(i);
    m.add(f32_model({v, 2 * v, 0.25f * v, -v}), exact);
  }
  const auto completed = [&] {
    return std::all_of(m.nodes.begin(), m.nodes.end(), [](const auto& n) {
      return n->status().members_alive == 5 && n->status().epochs_completed >= 1;
    });
  };
  CHECK(run_until(m.io, completed));
  const auto first = values_of(m.nodes[0]->estimate().value());
  for (const auto& n : m.nodes)
    CHECK(values_of(n->estimate().value()) == first);
  // The mean of 0..4 is 2; every value below is a small dyadic multiple of it.
  CHECK(first == std::vector<float>{2, 4, 0.5f, -2});
}

// The CUDA path: where no GPU is usable a case says so and passes, unless MWS_TEST_REQUIRE_CUDA
// is set (the GPU machine's runs set it, so a silent CPU fallback fails).
bool cuda_usable(mesh& m) {
  node_options probe;
  probe.key_file = m.dir.path / "probe.key";
  probe.device = gpu::backend_choice::cuda;
  probe.log_min = log_level::error;
  auto n = node::create(m.io.get_executor(), probe, f32_model({1}));
  if (!n && std::getenv("MWS_TEST_REQUIRE_CUDA") == nullptr) {
    MESSAGE("skipped: " << n.error().message);
    return false;
  }
  REQUIRE_MESSAGE(n.has_value(), (n ? "" : n.error().message));
  return true;
}

TEST_CASE("on a CUDA device, shares stream into device memory and reach the exact mean") {
  mesh m;
  if (!cuda_usable(m)) return;
  check_streamed_mean(m, [](node_options& o) { o.device = gpu::backend_choice::cuda; });
  for (const auto& n : m.nodes)
    CHECK(n->status().backend == "cuda");
}

TEST_CASE("on a CUDA device, embedded nodes mix in device memory and reach the exact mean") {
  for (const auto algorithm : {averaging::push_sum, averaging::exact}) {
    CAPTURE(to_string(algorithm));
    mesh m;
    const auto on_gpu = [&](node_options& o) {
      o.device = gpu::backend_choice::cuda;
      o.algorithm = algorithm;
      o.epoch_interval_us = 300'000;
    };
    if (!cuda_usable(m)) return;
    m.add(f32_model({1, 2, 3, 4}), on_gpu);
    m.add(f32_model({4, 4, 4, 4}), on_gpu);
    m.add(f32_model({-2, 0, 2, 7}), on_gpu);
    m.add(f32_model({5, -2, 1, 1}), on_gpu);
    for (const auto& n : m.nodes)
      CHECK(n->status().backend == "cuda");
    const std::vector<float> exact{2, 1, 2.5f, 4};
    CHECK(run_until(m.io, [&] { return m.worst_error(exact) < 1e-5; }));
    // A local update crosses to the device too: the mean moves by delta / 4.
    REQUIRE(m.nodes[1]->apply_local_update(f32_model({4, 4, 4, 4})).has_value());
    CHECK(run_until(m.io, [&] { return m.worst_error({3, 2, 3.5f, 5}) < 1e-5; }));
  }
}

TEST_CASE("a node that averages with another algorithm is refused") {
  mesh m;
  m.add(f32_model({1, 2}));
  std::vector<node_event> events;
  auto& other = m.add(f32_model({3, 4}), [](node_options& o) { o.algorithm = averaging::exact; });
  other.subscribe([&](const node_event& e) { events.push_back(e); });
  CHECK(run_until(m.io, [&] { return !events.empty(); }));
  REQUIRE(!events.empty());
  CHECK(events[0].reason == "algorithm");
  CHECK(events[0].detail == "averages with push-sum, this node with exact");
  CHECK(other.status().members_alive == 1);
}

TEST_CASE("a node with another model is refused and never joins") {
  mesh m;
  m.add(f32_model({1, 2}));
  std::vector<node_event> events;
  auto& stranger = m.add(f32_model({1, 2, 3}));
  stranger.subscribe([&](const node_event& e) { events.push_back(e); });
  CHECK(run_until(m.io, [&] { return !events.empty(); }));
  REQUIRE(!events.empty());
  CHECK(events[0].what == node_event::kind::peer_refused);
  CHECK(events[0].reason == "manifest");
  CHECK(events[0].detail.find("'w' f32 [3] here") != std::string::npos);
  CHECK(stranger.status().members_alive == 1);
  CHECK(m.nodes[0]->status().members_alive == 1);
}

TEST_CASE("a node without the mesh key cannot connect") {
  mesh m;
  const std::array<std::uint8_t, 32> key{1, 2, 3};
  m.add(f32_model({1}), [&](node_options& o) { o.mesh_psk = key; });
  std::vector<node_event> refused;
  m.nodes[0]->subscribe([&](const node_event& e) {
    if (e.what == node_event::kind::peer_refused) refused.push_back(e);
  });
  auto& intruder = m.add(f32_model({5}));  // no key
  CHECK(run_until(m.io, [&] { return !refused.empty(); }));
  REQUIRE(!refused.empty());
  CHECK(refused[0].reason == "handshake");
  CHECK(intruder.status().members_alive == 1);
  CHECK(m.nodes[0]->status().members_alive == 1);
  CHECK(values_of(m.nodes[0]->estimate().value()) == std::vector<float>{1});
}

TEST_CASE("bad options and a busy port are refused with one clear sentence") {
  temp_dir dir;
  boost::asio::io_context io;
  node_options o;
  o.key_file = dir.path / "key";
  o.log_min = log_level::error;
  SUBCASE("a listen address that is not numeric host:port") {
    o.listen = "localhost";
    auto n = node::create(io.get_executor(), o, f32_model({1})).value();
    auto started = n->start();
    REQUIRE_FALSE(started.has_value());
    CHECK(started.error().message.find("not host:port") != std::string::npos);
  }
  SUBCASE("seed and advertised addresses: names and IPs pass, anything else is refused") {
    for (const auto* ok :
         {"localhost:7400", "node-1.example.org:1", "10.0.0.1:7400", "[::1]:7400"}) {
      CAPTURE(ok);
      o.seeds = {ok};
      o.advertise = ok;
      CHECK(node::create(io.get_executor(), o, f32_model({1})).has_value());
    }
    const std::string long_name = std::string(250, 'a') + ":7400";
    for (const std::string bad :
         {"nocolon", "host_name:7400", "-lead.example:1", "a..b:1", "10.0.0.1:0", "10.0.0.1:70000",
          "example.org:port", ":7400", "123:80", "127.1:80", "fe80::1:7000", "[1.2.3.4]:80",
          "[name]:80", "10.0.0.1:+80", "10.0.0.1: 80", long_name.c_str()}) {
      CAPTURE(bad);
      o.seeds = {bad};
      o.advertise.clear();
      auto n = node::create(io.get_executor(), o, f32_model({1}));
      REQUIRE_FALSE(n.has_value());
      if (bad.size() < 200) CHECK(n.error().message.find(bad) != std::string::npos);
      o.seeds.clear();
      o.advertise = bad;
      CHECK_FALSE(node::create(io.get_executor(), o, f32_model({1})).has_value());
    }
  }
  SUBCASE("a port in use") {
    auto first = node::create(io.get_executor(), o, f32_model({1})).value();
    REQUIRE(first->start().has_value());
    o.listen = "127.0.0.1:" + std::to_string(first->listen_endpoint().port());
    auto second = node::create(io.get_executor(), o, f32_model({1})).value();
    auto started = second->start();
    REQUIRE_FALSE(started.has_value());
    CHECK(started.error().message.find("cannot listen on") != std::string::npos);
    first->stop();
  }
  SUBCASE("a damaged key file") {
    std::FILE* f = std::fopen(o.key_file.c_str(), "w");
    std::fputs("not a key", f);
    std::fclose(f);
    std::filesystem::permissions(
        o.key_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto n = node::create(io.get_executor(), o, f32_model({1}));
    REQUIRE_FALSE(n.has_value());
    CHECK(n.error().message.find("key file") != std::string::npos);
  }
  SUBCASE("an update that does not match the model") {
    auto n = node::create(io.get_executor(), o, f32_model({1, 2})).value();
    auto r = n->apply_local_update(f32_model({1}));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("does not match") != std::string::npos);
  }
}

TEST_CASE("a node resumes x and w from its last checkpoint") {
  temp_dir dir;
  boost::asio::io_context io;
  node_options o;
  o.key_file = dir.path / "key";
  o.data_dir = dir.path / "data";
  o.log_min = log_level::error;
  {
    auto n = node::create(io.get_executor(), o, f32_model({2, 4})).value();
    REQUIRE(n->start().has_value());
    REQUIRE(n->apply_local_update(f32_model({2, 2}), 1.0).has_value());  // x = {4, 6}, w = 2
    n->stop();  // writes the final checkpoint
    io.run_for(std::chrono::milliseconds(400));
  }
  io.restart();
  auto resumed = node::create(io.get_executor(), o, f32_model({0, 0})).value();
  CHECK(resumed->status().weight == 2.0);
  CHECK(values_of(resumed->estimate().value()) == std::vector<float>{2, 3});
  SUBCASE("but not a checkpoint of another model") {
    auto other = node::create(io.get_executor(), o, f32_model({0, 0, 0}));
    REQUIRE_FALSE(other.has_value());
    CHECK(other.error().message.find("holds another model") != std::string::npos);
  }
}

}  // namespace
}  // namespace mws::runtime
