#include "gossip/node.hpp"

#include <doctest/doctest.h>

#include "driver.hpp"
#include "helpers.hpp"

namespace mws::gossip::test {
namespace {

using neighbours_fn = std::vector<peer_id> (*)(std::size_t, std::size_t);

struct sync_result {
  std::int64_t worst_lead = 0;        // max over events and edges of round_i - round_j
  std::uint32_t worst_staleness = 0;  // max over nodes of max_staleness_used
  round_t slowest = 0;
  double mass_error = 0.0;
  double relative_error = 0.0;
};

sync_result run_sync(std::size_t n, neighbours_fn graph, std::uint32_t s, network net,
                     round_t rounds, std::uint64_t seed) {
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, net, seed);
  rng values(seed);
  std::vector<std::vector<peer_id>> adj;
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.algo = algorithm::sync;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = graph(n, i);
    cfg.staleness = s;
    cfg.sync_rounds = rounds;
    cfg.tick_interval_us = 1000;
    cfg.timeout_us = 3000;
    cfg.seed = seed + i;
    adj.push_back(cfg.peers);
    d.add(cfg, one_tensor(8), [&](model& m) {
      for (auto& v : floats(m.x))
        v = 1.0f + static_cast<float>(values.unit());
    });
  }
  const auto before = total_mass(d);
  sync_result r;
  auto slowest = [&] {
    round_t lo = ~round_t{0};
    for (std::size_t i = 0; i < n; ++i)
      lo = std::min(lo, d.node(i).stats().round);
    return lo;
  };
  d.start();
  d.run(
      1'000'000'000, [&] { return slowest() >= rounds; },
      [&] {
        for (std::size_t i = 0; i < n; ++i) {
          const auto ri = static_cast<std::int64_t>(d.node(i).stats().round);
          for (auto j : adj[i]) {
            const auto rj = static_cast<std::int64_t>(d.node(j.value).stats().round);
            r.worst_lead = std::max(r.worst_lead, ri - rj);
          }
        }
      });
  r.slowest = slowest();
  for (std::size_t i = 0; i < n; ++i) {
    r.worst_staleness = std::max(r.worst_staleness, d.node(i).stats().max_staleness_used);
  }
  const auto after = total_mass(d);
  for (std::size_t k = 0; k < before.x.size(); ++k) {
    r.mass_error = std::max(r.mass_error, std::abs(after.x[k] - before.x[k]) / before.x[k]);
  }
  r.relative_error = max_relative_error(d, ratio(before));
  return r;
}

const network jittery{.latency_min_us = 100, .latency_max_us = 8000};

TEST_CASE("sync: no node ever runs more than s rounds ahead of a neighbour (README's bound)") {
  for (std::uint32_t s : {0u, 1u, 3u}) {
    for (auto graph : {&ring_neighbours, &hypercube_neighbours}) {
      CAPTURE(s);
      const auto r = run_sync(16, graph, s, jittery, 60, 7 + s);
      CHECK(r.slowest == 60);
      // round_i <= round_j + s + 1: a node finishing round r+1 used neighbour values of round
      // >= r - s; with s = 0 that is the bulk-synchronous barrier.
      CHECK(r.worst_lead <= static_cast<std::int64_t>(s) + 1);
      CHECK(r.worst_staleness <= s);
      if (s > 0) CHECK(r.worst_lead >= 2);  // the bound is used, not just respected
    }
  }
}

TEST_CASE("sync with s = 0 conserves mass and converges on a hypercube") {
  const auto r = run_sync(16, &hypercube_neighbours, 0, jittery, 80, 3);
  CHECK(r.worst_staleness == 0);
  CHECK(r.mass_error < 1e-6);
  CHECK(r.relative_error < 1e-5);
}

TEST_CASE("sync keeps going through 20% loss and duplication, within its bound") {
  for (std::uint32_t s : {0u, 2u}) {
    CAPTURE(s);
    const network lossy{
        .loss = 0.2, .duplicate = 0.1, .latency_min_us = 100, .latency_max_us = 4000};
    const auto r = run_sync(12, &ring_neighbours, s, lossy, 40, 11);
    CHECK(r.slowest == 40);
    CHECK(r.worst_lead <= static_cast<std::int64_t>(s) + 1);
    CHECK(r.worst_staleness <= s);
    if (s == 0) CHECK(r.mass_error < 1e-6);
  }
}

TEST_CASE("sync drops a neighbour whose link is down from the barrier, and takes it back") {
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, jittery, 4);
  constexpr std::size_t n = 8;
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.algo = algorithm::sync;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = ring_neighbours(n, i);
    cfg.timeout_us = 3000;
    d.add(cfg, one_tensor(2), [&](model& m) {
      for (auto& v : floats(m.x))
        v = static_cast<float>(i);
    });
  }
  d.start();
  d.run(50'000);
  d.link_down(0, 1);  // the ring becomes a path; nobody waits for the lost link
  const auto before = d.node(0).stats().round;
  d.run(150'000);
  CHECK(d.node(0).stats().round > before + 5);
  CHECK(d.node(1).stats().round > before + 5);
  d.link_up(0, 1);
  const auto rejoined = d.node(1).stats().round;
  d.run(300'000);
  CHECK(d.node(1).stats().round > rejoined + 5);
  for (std::size_t i = 0; i < n; ++i)
    CHECK(d.node(i).stats().max_staleness_used == 0);
}

TEST_CASE("sync: a node cut off from all neighbours waits, then catches up after the heal") {
  for (std::uint32_t s : {0u, 2u}) {
    CAPTURE(s);
    auto backend = gpu::make_cpu_backend();
    driver d(*backend, jittery, 8);
    constexpr std::size_t n = 8;
    for (std::size_t i = 0; i < n; ++i) {
      config cfg;
      cfg.algo = algorithm::sync;
      cfg.self = {static_cast<std::uint32_t>(i)};
      cfg.peers = ring_neighbours(n, i);
      cfg.staleness = s;
      cfg.timeout_us = 3000;
      d.add(cfg, one_tensor(2), [&](model& m) {
        for (auto& v : floats(m.x))
          v = static_cast<float>(i);
      });
    }
    d.start();
    d.run(30'000);
    d.link_down(0, 1);
    d.link_down(0, 7);
    d.run(400'000);
    const auto alone = d.node(0).stats().round;
    CHECK(d.node(4).stats().round > alone + 20);  // the rest ran far ahead
    d.run(500'000);
    CHECK(d.node(0).stats().round == alone);  // no rounds alone
    d.link_up(0, 1);
    d.link_up(0, 7);
    const auto ahead = d.node(4).stats().round;
    d.run(2'000'000);
    // Node 0 caught up and the ring runs on, within the bound again.
    CHECK(d.node(0).stats().round > ahead);
    for (std::size_t i = 0; i < n; ++i) {
      const auto ri = static_cast<std::int64_t>(d.node(i).stats().round);
      const auto rj = static_cast<std::int64_t>(d.node((i + 1) % n).stats().round);
      CHECK(std::abs(ri - rj) <= static_cast<std::int64_t>(s) + 1);
    }
  }
}

TEST_CASE("sync mixes with Metropolis-Hastings weights") {
  // A path 0 - 1 - 2: degrees 1, 2, 1, so W_01 = W_12 = 1/3, W_00 = W_22 = 2/3, W_11 = 1/3.
  auto backend = gpu::make_cpu_backend();
  driver d(*backend, network{}, 1);
  const std::vector<std::vector<peer_id>> adj = {{{1}}, {{0}, {2}}, {{1}}};
  for (std::uint32_t i = 0; i < 3; ++i) {
    config cfg;
    cfg.algo = algorithm::sync;
    cfg.self = {i};
    cfg.peers = adj[i];
    d.add(cfg, one_tensor(1), [&](model& m) { floats(m.x)[0] = i == 0 ? 3.0f : 0.0f; });
  }
  d.start();
  d.run(1'000'000, [&] {
    for (std::size_t i = 0; i < 3; ++i) {
      if (d.node(i).stats().round < 1) return false;
    }
    return true;
  });
  CHECK(floats(d.node(0).state().x)[0] == doctest::Approx(2.0));
  CHECK(floats(d.node(1).state().x)[0] == doctest::Approx(1.0));
  CHECK(floats(d.node(2).state().x)[0] == doctest::Approx(0.0));
}

TEST_CASE("sync refuses a value without a degree and values from strangers") {
  auto backend = gpu::make_cpu_backend();
  auto stream = backend->make_stream().value();
  config cfg;
  cfg.algo = algorithm::sync;
  cfg.self = {0};
  cfg.peers = {{1}};
  auto node = make_node(cfg, model::create(*backend, one_tensor(1)).value(), *backend, *stream);
  recording_sink out;
  node->start(0, out);
  auto p =
      std::make_shared<const tensor_set>(tensor_set::allocate(*backend, one_tensor(1)).value());
  message no_degree{{message_kind::sync_value, 0, 0, 0, 0, 1.0}, p};
  CHECK(node->on_message({1}, no_degree, 0, out) == errc::out_of_range);
  message ok{{message_kind::sync_value, 0, 0, 0, 1, 1.0}, p};
  CHECK(node->on_message({2}, ok, 0, out) == errc::not_a_peer);
  CHECK(!node->on_message({1}, ok, 0, out));
  CHECK(node->stats().round == 1);
}

}  // namespace
}  // namespace mws::gossip::test
