#include "gossip/node.hpp"

#include <doctest/doctest.h>

#include <functional>

#include "driver.hpp"
#include "helpers.hpp"

namespace mws::gossip::test {
namespace {

struct push_sum_run {
  double relative_error = 0.0;  // largest over nodes and elements of |x_i/w_i - mean| / |mean|
  double mass_error = 0.0;      // of the mesh: |sum x / sum w - mean| / |mean|, nothing in flight
  double weight_drift = 0.0;    // |sum w - n| / n, nothing in flight
  std::uint64_t dropped = 0, duplicated = 0;
};

// 16 nodes on a 4-dimensional hypercube, values in [1, 2), every node pushes once per ms over
// `net` for `lossy_us`; then 40 ms on a clean network with a fixed 100 us latency, so that at
// the end (500 us after a tick) no message is in flight and the nodes hold all the mass.
push_sum_run run_push_sum(bool running_sums, network net, time_us lossy_us, std::uint64_t seed,
                          bool hold_unacked = false) {
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, net, seed);
  constexpr std::size_t n = 16, numel = 16;
  rng values(seed + 1);
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.algo = algorithm::push_sum;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = hypercube_neighbours(n, i);
    cfg.running_sums = running_sums;
    cfg.hold_unacked = hold_unacked;
    cfg.tick_interval_us = 1000;
    cfg.seed = seed * 1000 + i;
    d.add(cfg, one_tensor(numel), [&](model& m) {
      for (std::size_t k = 0; k < numel; ++k) {
        floats(m.x)[k] = 1.0f + static_cast<float>(values.unit());
      }
    });
  }
  const auto exact = ratio(total_mass(d));
  d.start();
  d.run(lossy_us);
  d.net() = network{};
  d.run(lossy_us + 40'500);
  push_sum_run r;
  r.relative_error = max_relative_error(d, exact);
  const auto total = total_mass(d);
  const auto mesh = ratio(total);
  for (std::size_t k = 0; k < numel; ++k) {
    r.mass_error = std::max(r.mass_error, std::abs(mesh[k] - exact[k]) / exact[k]);
  }
  r.weight_drift = std::abs(total.w - static_cast<double>(n)) / static_cast<double>(n);
  r.dropped = d.dropped;
  r.duplicated = d.duplicated;
  return r;
}

// A one-element payload holding v.
payload_ptr one_value(gpu::backend& backend, float v) {
  auto s = tensor_set::allocate(backend, one_tensor(1)).value();
  floats(s)[0] = v;
  return std::make_shared<const tensor_set>(std::move(s));
}

// One push-sum node (self 1) with a one-element f32 model holding `x`, driven by hand.
struct lone_node {
  std::unique_ptr<gpu::backend> backend = gpu::make_cpu_backend();
  std::unique_ptr<gpu::stream> stream = backend->make_stream().value();
  std::unique_ptr<averaging_node> node;
  recording_sink out;

  explicit lone_node(const std::function<void(config&)>& tweak = {}, float x = 0.0f) {
    config cfg;
    cfg.self = {1};
    cfg.peers = {{2}};
    if (tweak) tweak(cfg);
    auto m = model::create(*backend, one_tensor(1)).value();
    floats(m.x)[0] = x;
    node = make_node(cfg, std::move(m), *backend, *stream);
  }
  payload_ptr sigma(float v) { return one_value(*backend, v); }
  float x() const { return floats(node->state().x)[0]; }
};

const network lossy{.loss = 0.2, .duplicate = 0.1, .latency_min_us = 100, .latency_max_us = 1900};

TEST_CASE("push-sum with running sums keeps the exact mean under loss, duplication, reordering") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const auto r = run_push_sum(true, lossy, 300'000, seed);
    MESSAGE("running sums: mass error " << r.mass_error << ", weight drift " << r.weight_drift
                                        << ", largest node error " << r.relative_error);
    CHECK(r.dropped > 800);
    CHECK(r.duplicated > 300);
    // The mesh's mass is exact to f32 rounding: no message lost or repeated made or destroyed any.
    CHECK(r.weight_drift < 1e-12);
    CHECK(r.mass_error < 1e-6);
    // After 40 ms of clean network (which carries no lost mass back: none was lost) every
    // node's estimate equals the exact mean to f32 rounding noise.
    CHECK(r.relative_error < 1e-6);
  }
}

TEST_CASE("push-sum holding unacked running sums keeps the exact mean under the same faults") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const auto r = run_push_sum(true, lossy, 300'000, seed, true);
    CHECK(r.dropped > 400);
    CHECK(r.duplicated > 150);
    CHECK(r.weight_drift < 1e-12);
    CHECK(r.mass_error < 1e-6);
    CHECK(r.relative_error < 1e-6);
  }
}

TEST_CASE("a holding push-sum node re-sends an unacked running sum unchanged") {
  lone_node n(
      [](config& c) {
        c.tick_interval_us = 10;
        c.timeout_us = 100;
        c.hold_unacked = true;
      },
      8.0f);
  n.node->start(0, n.out);
  n.node->on_tick(0, n.out);    // shares half: running sum 4, seq 1
  n.node->on_tick(50, n.out);   // unacked, not yet timed out: nothing
  n.node->on_tick(100, n.out);  // timed out: the same running sum again
  std::vector<message> sent;
  for (auto& a : n.out.actions)
    if (a.what == action::type::send) sent.push_back(a.msg);
  REQUIRE(sent.size() == 2);
  CHECK(sent[1].header.seq == 1);
  CHECK(sent[1].tensors == sent[0].tensors);
  CHECK(n.x() == 4.0f);
  CHECK(n.node->stats().resent == 1);
}

TEST_CASE("a holding push-sum node holds at most held_max running sums") {
  lone_node n([](config& c) {
    c.peers = {{2}, {3}, {4}};
    c.tick_interval_us = 10;
    c.timeout_us = 1'000'000;
    c.hold_unacked = true;
    c.held_max = 2;
  });
  n.node->start(0, n.out);
  for (time_us t = 0; t < 100; t += 10)
    n.node->on_tick(t, n.out);
  CHECK(n.node->stats().sent == 2);  // nobody acks: two held, the third link stays idle
  // A running sum held for a peer whose link went down holds nothing back.
  const auto first = n.out.actions[1].to;  // actions: timer, send, ...
  REQUIRE(n.out.actions[1].what == action::type::send);
  n.node->on_link_down(first, 100, n.out);
  n.node->on_tick(200, n.out);
  CHECK(n.node->stats().sent == 3);
}

TEST_CASE("a holding push-sum node gives up a held running sum after held_resends_max") {
  lone_node n(
      [](config& c) {
        c.tick_interval_us = 100;
        c.timeout_us = 100;
        c.hold_unacked = true;
        c.held_resends_max = 3;
      },
      8.0f);
  n.node->start(0, n.out);
  for (time_us t = 0; t <= 400; t += 100)
    n.node->on_tick(t, n.out);
  // 0: share, 100..300: three re-sends, 400: given up, and a new share in a new frame.
  CHECK(n.node->stats().resent == 3);
  CHECK(n.node->stats().held_abandoned == 1);
  CHECK(n.node->stats().sent == 5);
  const auto& last = n.out.actions[n.out.actions.size() - 2].msg;
  CHECK(last.header.seq == 2);
  CHECK(last.header.round == 1);
}

TEST_CASE("a held running sum given up on a lost link is applied at most once") {
  const auto holding = [](config& c) { c.hold_unacked = true; };
  lone_node a(holding, 8.0f);
  lone_node b(
      [](config& c) {
        c.self = {2};
        c.peers = {{1}};
        c.hold_unacked = true;
      },
      0.0f);
  a.node->start(0, a.out);
  a.node->on_tick(0, a.out);  // running sum 1 (4) held for b
  const message first = a.out.actions[1].msg;
  a.node->on_link_down({2}, 1, a.out);  // b looks failed: a gives the running sum up
  CHECK(a.node->stats().held_abandoned == 1);
  a.node->on_link_up({2}, 2, a.out);
  a.out.actions.clear();
  a.node->on_tick(1000, a.out);  // running sum 2 (2) in frame 1
  const message second = a.out.actions[0].msg;
  REQUIRE(second.header.seq == 2);
  REQUIRE(second.header.round == 1);
  CHECK(!b.node->on_message({1}, second, 1000, b.out));  // b never got the first: it follows
  CHECK(b.x() == 2.0f);
  CHECK(!b.node->on_message({1}, first, 1001, b.out));  // late: older than what b applied
  CHECK(b.node->stats().ignored == 1);
  CHECK(b.x() == 2.0f);
  CHECK(a.x() == 2.0f);  // the first share's 4 is lost with the link, never counted twice
}

TEST_CASE("a holding push-sum node refuses a second running sum in one frame") {
  lone_node n([](config& c) { c.hold_unacked = true; });
  auto& node = n.node;
  REQUIRE(!node->on_message({2}, {{message_kind::push_sum_running, 1, 0, 0, 0, 1.0}, n.sigma(2.0f)},
                            0, n.out));
  CHECK(node->on_message({2}, {{message_kind::push_sum_running, 2, 0, 0, 0, 2.0}, n.sigma(3.0f)}, 0,
                         n.out) == errc::out_of_range);
  // The next frame (after our ack of 1) is fine.
  CHECK(!node->on_message({2}, {{message_kind::push_sum_running, 2, 1, 0, 0, 1.0}, n.sigma(3.0f)},
                          0, n.out));
  CHECK(n.x() == 5.0f);
}

TEST_CASE("push-sum with running sums stays near the exact mean while loss continues") {
  // No clean phase: sample every node's estimate every ms over the second half of a second of
  // 20% loss, 10% duplication and 0.2-2.5 ms latency on a 32-node hypercube.
  auto backend = gpu::make_cpu_backend();
  const network net{.loss = 0.2, .duplicate = 0.1, .latency_min_us = 200, .latency_max_us = 2500};
  driver d(*backend, net, 501);
  constexpr std::size_t n = 32, numel = 16;
  rng values(502);
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = hypercube_neighbours(n, i);
    cfg.seed = 900 + i;
    d.add(cfg, one_tensor(numel), [&](model& m) {
      for (auto& v : floats(m.x))
        v = 1.0f + static_cast<float>(values.unit());
    });
  }
  const auto exact = ratio(total_mass(d));
  d.start();
  d.run(500'000);
  std::vector<double> samples;
  for (time_us t = 500'500; t < 1'000'000; t += 1000) {
    d.run(t);
    samples.push_back(max_relative_error(d, exact));
  }
  std::sort(samples.begin(), samples.end());
  const double median = samples[samples.size() / 2], worst = samples.back();
  MESSAGE("largest node error under loss: median " << median << ", worst " << worst);
  CHECK(median < 1e-6);
  CHECK(worst < 2e-5);
}

TEST_CASE("plain push-sum drifts under the same loss and duplication") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const auto plain = run_push_sum(false, lossy, 300'000, seed);
    MESSAGE("plain: mass error " << plain.mass_error << ", weight drift " << plain.weight_drift
                                 << ", largest node error " << plain.relative_error);
    CHECK(plain.weight_drift > 0.05);  // mass was destroyed or created
    CHECK(plain.mass_error > 1e-4);    // and the mesh now averages to something else
    CHECK(plain.relative_error > 1e-4);
  }
}

TEST_CASE("push-sum, plain and with running sums, converges on a lossless network") {
  for (bool running : {false, true}) {
    CAPTURE(running);
    const auto r = run_push_sum(running, network{}, 60'000, 7);
    CHECK(r.weight_drift < 1e-12);
    CHECK(r.mass_error < 1e-6);
    CHECK(r.relative_error < 2e-6);
  }
}

TEST_CASE("push-sum with running sums tracks local updates made at any time") {
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, lossy, 11);
  constexpr std::size_t n = 8, numel = 4;
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = hypercube_neighbours(n, i);
    cfg.fanout = 2;
    cfg.seed = 500 + i;
    d.add(cfg, one_tensor(numel), [&](model& m) {
      for (std::size_t k = 0; k < numel; ++k)
        floats(m.x)[k] = static_cast<float>(i + k);
      m.w = 1.0 + static_cast<double>(i % 3);  // weighted average
    });
  }
  auto expected = total_mass(d);
  d.start();
  auto delta = tensor_set::allocate(*backend, one_tensor(numel)).value();
  rng pick(99);
  for (int u = 0; u < 40; ++u) {
    d.run(d.now() + 500);
    const auto i = static_cast<std::size_t>(pick.below(n));
    for (std::size_t k = 0; k < numel; ++k) {
      floats(delta)[k] = static_cast<float>(pick.unit()) * 0.5f;
      expected.x[k] += static_cast<double>(floats(delta)[k]);
    }
    const gpu::const_tensor_view views[] = {delta[0]};
    REQUIRE(!d.node(i).apply_local_update(views, 0.25, d.now()));
    expected.w += 0.25;
  }
  d.net() = network{};
  d.run(d.now() + 200'000);
  CHECK(max_relative_error(d, ratio(expected)) < 1e-5);
}

TEST_CASE("push-sum in wire-faithful mode averages a model of mixed dtypes") {
  auto backend = gpu::make_cpu_backend();
  network net = lossy;
  net.wire = true;
  driver d(*backend, net, 5);
  const manifest spec = {{"layer.weight", gpu::dtype::f32, 33},
                         {"layer.bias", gpu::dtype::f16, 7},
                         {"embed", gpu::dtype::bf16, 5}};
  constexpr std::size_t n = 8;
  rng values(77);
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = hypercube_neighbours(n, i);
    cfg.seed = 40 + i;
    d.add(cfg, spec, [&](model& m) {
      for (std::size_t t = 0; t < spec.size(); ++t) {
        for (std::size_t k = 0; k < spec[t].numel; ++k) {
          set_element(m.x, t, k, 1.0f + static_cast<float>(values.unit()));
        }
      }
    });
  }
  std::vector<std::vector<double>> exact;
  for (std::size_t t = 0; t < spec.size(); ++t)
    exact.push_back(ratio(total_mass(d, t)));
  d.start();
  d.run(300'000);
  d.net() = network{.wire = true};
  d.run(340'500);
  CHECK(d.refused == 0);
  CHECK(max_relative_error(d, exact[0], 0) < 1e-6);
  // 16-bit running sums round at their own precision (README: precision of running sums).
  CHECK(max_relative_error(d, exact[1], 1) < 2e-2);
  CHECK(max_relative_error(d, exact[2], 2) < 1e-1);
}

TEST_CASE("push-sum keeps mass across links that go down and come back") {
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, lossy, 21);
  constexpr std::size_t n = 8;
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = hypercube_neighbours(n, i);
    cfg.seed = 70 + i;
    d.add(cfg, one_tensor(3), [&](model& m) {
      for (auto& v : floats(m.x))
        v = static_cast<float>(i + 1);
    });
  }
  const auto exact = ratio(total_mass(d));
  d.start();
  d.run(20'000);
  d.link_down(0, 1);
  d.link_down(2, 6);
  d.run(60'000);
  const auto quiet = d.dropped;
  d.link_up(0, 1);
  d.run(100'000);
  d.link_up(2, 6);
  d.run(300'000);
  d.net() = network{};
  d.run(340'500);
  CHECK(quiet > 0);
  const auto total = total_mass(d);
  CHECK(total.w == doctest::Approx(static_cast<double>(n)).epsilon(1e-12));
  CHECK(max_relative_error(d, exact) < 1e-6);
}

TEST_CASE("push-sum grows its neighbourhood while it runs and keeps the exact mean") {
  // Nodes start alone, as in a runtime whose members join one by one: node i learns of nodes
  // 0..i-1 when it joins (a ring of joins, then everyone), over a lossy network.
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, lossy, 33);
  constexpr std::size_t n = 6;
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.seed = 90 + i;
    d.add(cfg, one_tensor(4), [&](model& m) {
      for (auto& v : floats(m.x))
        v = static_cast<float>(3 * i + 1);
    });
  }
  const auto exact = ratio(total_mass(d));
  d.start();
  for (std::size_t i = 1; i < n; ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      REQUIRE(!d.node(i).add_peer({static_cast<std::uint32_t>(j)}));
      REQUIRE(!d.node(j).add_peer({static_cast<std::uint32_t>(i)}));
      d.link_up(i, j);
    }
    d.run(d.now() + 15'000);
  }
  CHECK(d.node(0).add_peer({1}) == errc::not_a_peer);  // known already
  CHECK(d.node(0).add_peer({0}) == errc::not_a_peer);  // self
  d.run(d.now() + 600'000);
  d.net() = network{};
  d.run(d.now() + 40'500);
  CHECK(total_mass(d).w == doctest::Approx(static_cast<double>(n)).epsilon(1e-12));
  CHECK(max_relative_error(d, exact) < 1e-6);
}

TEST_CASE("push-sum hears a restarted peer again after reset_peer") {
  lone_node n({}, 1.0f);
  auto& node = n.node;
  REQUIRE(!node->on_message({2}, {{message_kind::push_sum_running, 7, 0, 0, 0, 1.0}, n.sigma(2.0f)},
                            0, n.out));
  // The peer restarts: its running sums begin again at seq 1, which the old link ignores.
  const message fresh{{message_kind::push_sum_running, 1, 0, 0, 0, 0.5}, n.sigma(4.0f)};
  REQUIRE(!node->on_message({2}, fresh, 0, n.out));
  CHECK(n.x() == 3.0f);
  REQUIRE(!node->reset_peer({2}));
  REQUIRE(!node->on_message({2}, fresh, 0, n.out));
  CHECK(n.x() == 7.0f);
  CHECK(node->state().w == 2.5);
  CHECK(node->reset_peer({9}) == errc::not_a_peer);
}

TEST_CASE("only push-sum adds peers while it runs") {
  auto backend = gpu::make_cpu_backend();
  auto stream = backend->make_stream().value();
  config cfg;
  cfg.algo = algorithm::sync;
  cfg.self = {1};
  cfg.peers = {{2}};
  auto node = make_node(cfg, model::create(*backend, one_tensor(1)).value(), *backend, *stream);
  CHECK(node->add_peer({3}) == errc::not_supported);
  CHECK(node->reset_peer({2}) == errc::not_supported);
}

TEST_CASE("push-sum ignores an older or repeated running sum") {
  auto backend = gpu::make_cpu_backend();
  auto stream = backend->make_stream().value();
  config cfg;
  cfg.self = {1};
  cfg.peers = {{2}};
  auto m = model::create(*backend, one_tensor(1)).value();
  floats(m.x)[0] = 1.0f;
  auto node = make_node(cfg, std::move(m), *backend, *stream);
  recording_sink out;
  auto sigma = [&](float v) { return one_value(*backend, v); };
  message m2{{message_kind::push_sum_running, 2, 0, 0, 0, 1.0}, sigma(3.0f)};
  message m1{{message_kind::push_sum_running, 1, 0, 0, 0, 0.5}, sigma(1.0f)};
  REQUIRE(!node->on_message({2}, m2, 0, out));
  CHECK(floats(node->state().x)[0] == 4.0f);
  CHECK(node->state().w == 2.0);
  REQUIRE(!node->on_message({2}, m1, 0, out));  // reordered: older, ignored
  REQUIRE(!node->on_message({2}, m2, 0, out));  // duplicate, ignored
  CHECK(floats(node->state().x)[0] == 4.0f);
  CHECK(node->state().w == 2.0);
  CHECK(node->stats().ignored == 2);
  message m3{{message_kind::push_sum_running, 5, 0, 0, 0, 1.5}, sigma(4.5f)};
  REQUIRE(!node->on_message({2}, m3, 0, out));  // 3 and 4 lost: the difference carries them
  CHECK(floats(node->state().x)[0] == 5.5f);
  CHECK(node->state().w == 2.5);
}

TEST_CASE("push-sum acks what it applied, and restarts its running sum on an ack of its last") {
  auto backend = gpu::make_cpu_backend();
  auto stream = backend->make_stream().value();
  config cfg;
  cfg.self = {1};
  cfg.peers = {{2}};
  auto m = model::create(*backend, one_tensor(1)).value();
  floats(m.x)[0] = 8.0f;
  auto node = make_node(cfg, std::move(m), *backend, *stream);
  recording_sink out;
  node->start(0, out);
  node->on_tick(0, out);  // sends running sum 1 (= 4) to peer 2, keeps 4
  REQUIRE(out.actions.back().what == action::type::timer);
  const auto& first = out.actions[out.actions.size() - 2].msg;
  CHECK(first.header.kind == message_kind::push_sum_running);
  CHECK(first.header.seq == 1);
  CHECK(floats(*first.tensors)[0] == 4.0f);
  // Peer 2 acks seq 1: the next running sum starts from zero in frame 1.
  message ack{{message_kind::push_sum_ack, 1, 0, 0, 0, 0.0}, nullptr};
  REQUIRE(!node->on_message({2}, ack, 10, out));
  out.actions.clear();
  node->on_tick(1000, out);
  const auto& second = out.actions.front().msg;
  CHECK(second.header.seq == 2);
  CHECK(second.header.round == 1);
  CHECK(floats(*second.tensors)[0] == 2.0f);  // half of the 4 left, not 4 + 2
  CHECK(second.header.weight == 0.25);
  // Receiving a running sum from peer 2 answers with an ack of it.
  out.actions.clear();
  auto p = tensor_set::allocate(*backend, one_tensor(1)).value();
  floats(p)[0] = 1.0f;
  message in{{message_kind::push_sum_running, 1, 0, 0, 0, 0.5},
             std::make_shared<const tensor_set>(std::move(p))};
  REQUIRE(!node->on_message({2}, in, 20, out));
  REQUIRE(out.actions.size() == 1);
  CHECK(out.actions[0].msg.header.kind == message_kind::push_sum_ack);
  CHECK(out.actions[0].msg.header.seq == 1);
  // A stale ack (not of our last send) changes nothing.
  message stale{{message_kind::push_sum_ack, 1, 0, 0, 0, 0.0}, nullptr};
  REQUIRE(!node->on_message({2}, stale, 30, out));
  out.actions.clear();
  node->on_tick(2000, out);
  CHECK(out.actions.front().msg.header.seq == 3);
  CHECK(out.actions.front().msg.header.round == 1);  // same frame: the sum grows, 2 + 3/2
  CHECK(floats(*out.actions.front().msg.tensors)[0] == 3.5f);
}

TEST_CASE("push-sum refuses strangers, foreign kinds and payloads off the manifest") {
  auto backend = gpu::make_cpu_backend();
  auto stream = backend->make_stream().value();
  config cfg;
  cfg.self = {1};
  cfg.peers = {{2}};
  auto node = make_node(cfg, model::create(*backend, one_tensor(2)).value(), *backend, *stream);
  recording_sink out;
  auto good =
      std::make_shared<const tensor_set>(tensor_set::allocate(*backend, one_tensor(2)).value());
  auto wrong =
      std::make_shared<const tensor_set>(tensor_set::allocate(*backend, one_tensor(3)).value());
  message ok{{message_kind::push_sum_running, 1, 0, 0, 0, 1.0}, good};
  CHECK(node->on_message({9}, ok, 0, out) == errc::not_a_peer);
  message kind = ok;
  kind.header.kind = message_kind::sync_value;
  CHECK(node->on_message({2}, kind, 0, out) == errc::wrong_algorithm);
  message size{{message_kind::push_sum_running, 1, 0, 0, 0, 1.0}, wrong};
  CHECK(node->on_message({2}, size, 0, out) == errc::wrong_numel);
  message none{{message_kind::push_sum_running, 1, 0, 0, 0, 1.0}, nullptr};
  CHECK(node->on_message({2}, none, 0, out) == errc::wrong_tensor_count);
  message nan = ok;
  nan.header.weight = std::nan("");
  CHECK(node->on_message({2}, nan, 0, out) == errc::bad_weight);
  message zero = ok;
  zero.header.weight = 0.0;
  CHECK(node->on_message({2}, zero, 0, out) == errc::bad_weight);
  CHECK(node->stats().refused == 6);
  CHECK(node->stats().received == 0);
}

}  // namespace
}  // namespace mws::gossip::test
