#include "simulations/simulation.hpp"

#include <bit>
#include <cmath>

#include <doctest/doctest.h>

#include "tests/simulations/batched_cpu.hpp"

namespace mws::sim {
namespace {

std::unique_ptr<event_simulation> make(const scenario& s) {
  auto sim = event_simulation::create(s);
  INFO("seed ", s.seed);
  REQUIRE(sim.has_value());
  return std::move(*sim);
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0.0;
  for (std::size_t k = 0; k < a.size(); ++k)
    d = std::max(d, std::abs(a[k] - b[k]));
  return d;
}

// Sync MH rounds driven through the real gossip/ state machines: with constant latency L every
// node completes round r at time r*L, so one step of L is one round.
scenario sync_lockstep(topology_kind kind, node_id n, std::uint64_t seed, std::uint64_t steps) {
  scenario s;
  s.seed = seed;
  s.topology.kind = kind;
  s.topology.nodes = n;
  s.algo = gossip::algorithm::sync;
  s.params = 8;
  s.steps = steps;
  s.network.links.latency = {latency_kind::constant, 1000.0, 0.0};
  s.step_us = 1000;
  s.tick_us = 100000;  // retransmission only; nothing is lost here
  s.timeout_us = 100000;
  return s;
}

TEST_CASE("event-mode sync rounds contract within 5% of the SLEM on 64-node graphs") {
  struct rate_case {
    topology_kind kind;
    std::uint64_t seed;
    std::uint64_t rounds;
  };
  const rate_case cases[] = {
      {topology_kind::ring, 101, 2500},      {topology_kind::torus, 102, 200},
      {topology_kind::hypercube, 103, 60},   {topology_kind::random_regular, 104, 120},
      {topology_kind::exponential, 105, 60},
  };
  for (const auto& c : cases) {
    INFO("seed ", c.seed, " topology ", to_string(c.kind));
    auto sim = make(sync_lockstep(c.kind, 64, c.seed, c.rounds));
    const run_summary r = sim->run();
    CAPTURE(r.predicted_contraction);
    CAPTURE(r.measured_contraction);
    REQUIRE(r.predicted_contraction > 0.0);
    CHECK(std::abs(r.measured_contraction - r.predicted_contraction) <=
          0.05 * r.predicted_contraction);
    CHECK(r.staleness_violations == 0);
    CHECK(r.refused == 0);
  }
}

TEST_CASE("batched mode agrees with the event mode's sync rounds") {
  for (auto kind : {topology_kind::torus, topology_kind::random_regular, topology_kind::ring}) {
    const std::uint64_t seed = 201;
    INFO("seed ", seed, " topology ", to_string(kind));
    scenario s = sync_lockstep(kind, 64, seed, 30);
    s.params = 40;
    auto sim = make(s);
    batched_sync batch = test::batched_on_cpu(metropolis_hastings(sim->topology()), s.params);
    for (node_id i = 0; i < 64; ++i)
      batch.load(i, sim->raw_x(i));  // before any round
    sim->run();
    for (int r = 0; r < 30; ++r)
      batch.round();
    std::vector<float> b(s.params);
    double worst = 0.0;
    for (node_id i = 0; i < 64; ++i) {
      REQUIRE(sim->node(i).stats().round == 30);
      batch.store(i, b);
      const auto e = sim->raw_x(i);
      for (std::size_t k = 0; k < s.params; ++k)
        worst = std::max(worst, static_cast<double>(std::abs(e[k] - b[k])));
    }
    // Same matrix, same rounds; the two compute x + sum W (x_j - x) and sum W x_j, which round
    // differently, so they agree to f32 rounding (values are in [0, 1)).
    CHECK(worst < 2e-6);
  }
}

TEST_CASE("exact mode: 64 nodes are bit-identical after 6 rounds and equal the mean") {
  scenario s;
  s.seed = 301;
  s.topology.kind = topology_kind::complete;
  s.topology.nodes = 64;
  s.algo = gossip::algorithm::exact;
  s.params = 33;
  s.steps = 12;
  s.network.links.latency = {latency_kind::uniform, 200.0, 900.0};
  auto sim = make(s);
  const auto mu = sim->exact_mean();
  sim->run();
  const auto x0 = sim->raw_x(0);
  const double w0 = sim->node(0).state().w;
  for (node_id i = 0; i < 64; ++i) {
    INFO("node ", i, " seed ", s.seed);
    REQUIRE(sim->node(i).stats().round == 1);  // one epoch of log2(64) = 6 steps, complete
    const auto xi = sim->raw_x(i);
    CHECK(std::bit_cast<std::uint64_t>(sim->node(i).state().w) == std::bit_cast<std::uint64_t>(w0));
    for (std::size_t k = 0; k < s.params; ++k)
      REQUIRE(std::bit_cast<std::uint32_t>(xi[k]) == std::bit_cast<std::uint32_t>(x0[k]));
  }
  // Six halvings of sums of values in [0, 1): each step rounds once, so the mean is reached to a
  // few f32 ulps (relative 2^-24 per step).
  const auto z = sim->estimate(0);
  for (std::size_t k = 0; k < s.params; ++k)
    CHECK(std::abs(z[k] - mu[k]) <= 6 * 0x1p-24 * mu[k]);
}

TEST_CASE("exact mode reaches the mean for node counts that are not powers of two") {
  for (node_id n : {3u, 48u, 100u}) {
    scenario s;
    s.seed = 400 + n;
    s.topology.kind = topology_kind::complete;
    s.topology.nodes = n;
    s.algo = gossip::algorithm::exact;
    s.params = 17;
    s.steps = 20;
    s.network.links.latency = {latency_kind::uniform, 100.0, 700.0};
    INFO("nodes ", n, " seed ", s.seed);
    auto sim = make(s);
    const auto mu = sim->exact_mean();
    sim->run();
    const auto z0 = sim->estimate(0);
    for (node_id i = 0; i < n; ++i) {
      REQUIRE(sim->node(i).stats().round == 1);
      const auto z = sim->estimate(i);
      for (std::size_t k = 0; k < s.params; ++k) {
        REQUIRE(z[k] == z0[k]);  // every estimate bit-identical
        CHECK(std::abs(z[k] - mu[k]) <= 1e-6 * mu[k]);
      }
    }
    CHECK(sim->series().back().mass_drift_w == 0.0);
  }
}

scenario lossy_push_sum(bool running_sums, std::uint64_t seed) {
  scenario s;
  s.seed = seed;
  s.topology.kind = topology_kind::random_regular;
  s.topology.nodes = 32;
  s.topology.degree = 6;
  s.algo = gossip::algorithm::push_sum;
  s.running_sums = running_sums;
  s.params = 16;
  s.steps = 300;
  s.tick_us = 1000;
  s.step_us = 1000;
  s.network.links.latency = {latency_kind::uniform, 200.0, 2500.0};  // reorders too
  s.network.links.loss_p = 0.2;
  s.network.links.duplicate_p = 0.1;
  return s;
}

TEST_CASE("push-sum with running sums reaches the exact mean under 20% loss and duplication") {
  auto sim = make(lossy_push_sum(true, 501));
  const auto mu = sim->exact_mean();
  const run_summary r = sim->run();
  INFO("seed 501");
  CHECK(r.lost > 1000);
  CHECK(r.duplicated > 500);
  CHECK(r.refused == 0);
  // Node-held plus in-flight mass equals what was injected: nothing lost, nothing created, so
  // the mesh's ratio sum x / sum w is the exact mean. f32 rounding of x only.
  CHECK(r.last.mass_drift_x < 1e-6);
  CHECK(r.last.mass_drift_w < 1e-12);
  // Every node's own estimate equals the exact mean to 1e-6. In steady state the f32 rounding
  // of the running sums keeps the worst node's error wandering between about 1e-7 and 1e-5
  // (gossip/README.md), so besides the final sample, most samples of the second half must be
  // below 1e-6 too: agreement is the rule, not a lucky moment.
  CHECK(r.last.max_relative_error < 1e-6);
  for (node_id i = 0; i < sim->nodes(); ++i)
    CHECK(max_abs_diff(sim->estimate(i), mu) < 1e-6);
  const auto& series = sim->series();
  std::size_t below = 0, counted = 0;
  for (std::size_t k = series.size() / 2; k < series.size(); ++k, ++counted)
    if (series[k].max_relative_error < 1e-6) ++below;
  CHECK(2 * below > counted);
}

TEST_CASE("plain push-sum drifts away from the mean under the same faults") {
  auto sim = make(lossy_push_sum(false, 501));
  const run_summary r = sim->run();
  INFO("seed 501");
  // Lost shares take mass with them and duplicates create it: the nodes agree with each other
  // but on a wrong value, and the mass they hold is far from what was injected.
  CHECK(r.last.max_relative_error > 1e-3);
  CHECK(r.last.mass_drift_w > 0.1);
}

TEST_CASE("same seed gives the same trace hash; different seeds differ") {
  scenario s = lossy_push_sum(true, 601);
  s.steps = 40;
  s.network.links.latency = {latency_kind::lognormal, 800.0, 0.6};
  s.network.links.bandwidth_bytes_per_s = 2e6;
  const auto a = make(s)->run();
  const auto b = make(s)->run();
  CHECK(a.trace_hash == b.trace_hash);
  CHECK(a.events == b.events);
  CHECK(a.last.distance_rms == b.last.distance_rms);
  s.seed = 602;
  const auto c = make(s)->run();
  CHECK(c.trace_hash != a.trace_hash);
  // The wire-faithful mode runs every message through encode -> decode: same trace.
  s.seed = 601;
  s.wire_faithful = true;
  const auto d = make(s)->run();
  CHECK(d.trace_hash == a.trace_hash);
  CHECK(d.refused == 0);
  CHECK(d.last.distance_rms == a.last.distance_rms);
}

TEST_CASE("sync with staleness bound s keeps every node within s rounds of its neighbours") {
  for (std::uint32_t staleness : {0u, 1u, 3u}) {
    scenario s;
    s.seed = 700 + staleness;
    s.topology.kind = topology_kind::small_world;
    s.topology.nodes = 48;
    s.algo = gossip::algorithm::sync;
    s.staleness = staleness;
    s.params = 8;
    s.steps = 150;
    s.step_us = 500;
    s.tick_us = 400;
    s.timeout_us = 2000;
    s.network.links.latency = {latency_kind::lognormal, 300.0, 1.0};  // heavy tail
    s.network.links.loss_p = 0.05;
    s.network.slow.push_back({5, 4.0, 3.0});
    INFO("staleness ", staleness, " seed ", s.seed);
    auto sim = make(s);
    const auto r = sim->run();
    CHECK(r.staleness_violations == 0);
    for (const auto& smp : sim->series()) {
      CHECK(smp.round_gap <= staleness + 1);
      CHECK(smp.staleness_used <= staleness);
    }
    CHECK(r.last.round_mean > 20.0);  // it made progress despite loss and a slow node
  }
}

TEST_CASE("a healed partition and a restarted node still end at the mean") {
  scenario s;
  s.seed = 801;
  s.topology.kind = topology_kind::torus;
  s.topology.nodes = 36;
  s.algo = gossip::algorithm::push_sum;
  s.params = 8;
  s.steps = 400;
  s.step_us = 1000;
  s.network.links.latency = {latency_kind::normal, 500.0, 150.0};
  s.network.partitions.push_back({20000, 80000, {0, 1, 2, 3, 4, 5}, false});
  s.network.partitions.push_back({90000, 120000, {10, 11}, true});
  s.network.crashes.push_back({20, 30000, 100000});
  auto sim = make(s);
  const auto mu = sim->exact_mean();
  const auto r = sim->run();
  INFO("seed ", s.seed);
  CHECK(r.cut > 0);
  CHECK(r.last.mass_drift_w < 1e-12);  // nothing lost: in-flight running sums are counted
  for (node_id i = 0; i < sim->nodes(); ++i)
    CHECK(max_abs_diff(sim->estimate(i), mu) < 1e-6);
}

TEST_CASE("decentralised SGD lowers the loss while the nodes agree") {
  for (auto problem : {sgd_problem::least_squares, sgd_problem::logistic}) {
    scenario s;
    s.seed = 901;
    s.topology.kind = topology_kind::exponential;
    s.topology.nodes = 32;
    s.algo = gossip::algorithm::sync;
    s.params = 10;
    s.steps = 300;
    s.network.links.latency = {latency_kind::constant, 1000.0, 0.0};
    s.step_us = 1000;
    s.workload.kind = workload_kind::sgd;
    s.workload.problem = problem;
    s.workload.learning_rate = 0.1;
    s.workload.samples_per_node = 32;
    INFO("problem ", static_cast<int>(problem), " seed ", s.seed);
    auto sim = make(s);
    sim->run();
    const auto& series = sim->series();
    // Heterogeneous data keep the nodes apart by about lr x heterogeneity (D-PSGD's consensus
    // error); the loss at the mean falls well below its start.
    CHECK(series.back().loss < 0.8 * series.front().loss);
    CHECK(series.back().distance_rms < 0.1 * series.front().distance_rms);
    CHECK(series.back().mass_drift_x < 1e-4);
  }
}

TEST_CASE("tracking: local updates are followed, and their mass is accounted for") {
  scenario s;
  s.seed = 951;
  s.topology.kind = topology_kind::hypercube;
  s.topology.nodes = 32;
  s.algo = gossip::algorithm::push_sum;
  s.params = 8;
  s.steps = 99;  // the last sample comes 9 steps after the last update
  s.step_us = 1000;
  s.workload.kind = workload_kind::tracking;
  s.workload.update_every = 10;
  s.workload.update_scale = 0.05;
  auto sim = make(s);
  sim->run();
  const auto& last = sim->series().back();
  INFO("seed ", s.seed);
  // Updates every 10 steps; 10 steps of push-sum on a hypercube shrink the disagreement they
  // cause well below their size.
  CHECK(last.max_relative_error < 0.05);
  CHECK(last.mass_drift_w < 1e-12);
}

TEST_CASE("pairwise gossip converges under loss and duplication and keeps its mass") {
  scenario s;
  s.seed = 1001;
  s.topology.kind = topology_kind::torus;
  s.topology.nodes = 36;
  s.algo = gossip::algorithm::pairwise;
  s.params = 8;
  s.steps = 400;
  s.step_us = 1000;
  s.network.links.latency = {latency_kind::uniform, 100.0, 900.0};
  s.network.links.loss_p = 0.1;
  s.network.links.duplicate_p = 0.05;
  auto sim = make(s);
  const auto r = sim->run();
  INFO("seed ", s.seed);
  CHECK(r.refused == 0);
  CHECK(r.lost > 100);
  CHECK(r.last.distance_rms < 1e-2 * sim->series().front().distance_rms);
  // Exchanges under way at the last sample are half-applied; everything else is exact.
  bool locked = false;
  for (node_id i = 0; i < sim->nodes(); ++i)
    locked = locked || sim->node(i).stats().locked != 0;
  CHECK(r.last.mass_drift_x < (locked ? 1e-3 : 1e-6));
}

TEST_CASE("bad scenarios are refused with a clear error") {
  scenario s;
  s.topology.nodes = 1;
  CHECK(event_simulation::create(s).error().code == errc::too_few_nodes);
  s.topology.nodes = 16;
  s.network.links.loss_p = 1.5;
  CHECK(event_simulation::create(s).error().message.find("loss") != std::string::npos);
  s.network.links.loss_p = 0.0;
  s.params = 0;
  CHECK(event_simulation::create(s).error().code == errc::bad_scenario);
  s.params = 8;
  s.mode = sim_mode::batched;
  s.algo = gossip::algorithm::push_sum;
  CHECK(run_scenario(s).error().code == errc::unsupported);
}

}  // namespace
}  // namespace mws::sim
