#include "simulations/batched.hpp"

#include <bit>
#include <cmath>
#include <cstdlib>

#include <doctest/doctest.h>

#include "simulations/metrics.hpp"
#include "tests/simulations/batched_cpu.hpp"

namespace mws::sim {
namespace {

struct rate_case {
  topology_kind kind;
  std::uint64_t seed;
};

// Synchronous MH rounds from a random start; the consensus distance must shrink per round at
// the rate the mixing matrix's second-largest eigenvalue modulus predicts.
TEST_CASE("batched sync rounds contract at the SLEM rate on 64-node graphs") {
  const rate_case cases[] = {
      {topology_kind::ring, 11},        {topology_kind::torus, 12},
      {topology_kind::hypercube, 13},   {topology_kind::random_regular, 14},
      {topology_kind::exponential, 15}, {topology_kind::small_world, 16},
      {topology_kind::erdos_renyi, 17},
  };
  for (const auto& c : cases) {
    INFO("seed ", c.seed, " topology ", to_string(c.kind));
    rng random(c.seed);
    const mixing_matrix w = test::mixing_of(c.kind, 64, random);
    const double predicted = mixing_spectrum(w).slem;
    const std::size_t params = 8;
    batched_sync b = test::batched_on_cpu(w, params);
    std::vector<double> mu(params, 0.0);
    std::vector<float> x(params);
    for (node_id i = 0; i < 64; ++i) {
      for (auto& v : x)
        v = static_cast<float>(random.uniform01());
      b.load(i, x);
      for (std::size_t k = 0; k < params; ++k)
        mu[k] += static_cast<double>(x[k]) / 64.0;
    }
    std::vector<sample> series;
    auto record = [&](std::uint64_t r) {
      sample s;
      s.step = r;
      s.round_mean = static_cast<double>(r);
      s.distance_rms = b.stats(mu).distance_rms;
      series.push_back(s);
    };
    record(0);
    const double d0 = series.front().distance_rms;
    for (std::uint64_t r = 1; r <= 4000 && series.back().distance_rms > 1e-4 * d0; ++r) {
      b.round();
      record(r);
    }
    const double measured = measured_contraction(series, true, 1e-4);
    CAPTURE(predicted);
    CAPTURE(measured);
    CHECK(std::abs(measured - predicted) <= 0.05 * predicted);
    // Synchronous MH rounds keep the mean: mass drifts only by f32 rounding, a random walk of
    // about one rounding (6e-8) per round; a wrong weight would drift by O(1).
    CHECK(b.stats(mu).mass_drift < 1e-7 * static_cast<double>(series.back().step));
  }
}

TEST_CASE("batched mode gives the same bits for any block size") {
  rng random(21);
  const mixing_matrix w = test::mixing_of(topology_kind::random_regular, 100, random);
  const std::size_t params = 70;  // not a multiple of any block
  // 8: shorter than a register chunk; 16 and 64: whole chunks, stored past the caches where the
  // CPU allows; 0: the block picked from the rows' spans.
  batched_sync small = test::batched_on_cpu(w, params, 8),
               mid = test::batched_on_cpu(w, params, 16),
               large = test::batched_on_cpu(w, params, 64),
               picked = test::batched_on_cpu(w, params);
  std::vector<float> x(params);
  for (node_id i = 0; i < 100; ++i) {
    for (auto& v : x)
      v = static_cast<float>(random.uniform(-1.0, 1.0));
    for (batched_sync* b : {&small, &mid, &large, &picked})
      b->load(i, x);
  }
  for (int r = 0; r < 10; ++r)
    for (batched_sync* b : {&small, &mid, &large, &picked})
      b->round();
  const std::vector<double> mu(params, 0.25);
  for (const batched_sync* other : {&mid, &large, &picked})
    CHECK(other->stats(mu).distance_rms == small.stats(mu).distance_rms);
  std::vector<float> a(params), b(params);
  for (node_id i = 0; i < 100; ++i) {
    small.store(i, a);
    for (const batched_sync* other : {&mid, &large, &picked}) {
      other->store(i, b);
      for (std::size_t k = 0; k < params; ++k)
        REQUIRE(std::bit_cast<std::uint32_t>(a[k]) == std::bit_cast<std::uint32_t>(b[k]));
    }
  }
}

// Where no GPU is usable the case says so and passes, unless MWS_TEST_REQUIRE_CUDA is set (the
// GPU machine's runs set it).
TEST_CASE("batched rounds on a CUDA device give the CPU's bits") {
  auto cuda = gpu::make_backend(gpu::backend_choice::cuda);
  if (!cuda.chosen && std::getenv("MWS_TEST_REQUIRE_CUDA") == nullptr) {
    MESSAGE("skipped: " << cuda.reason);
    return;
  }
  REQUIRE_MESSAGE(cuda.chosen != nullptr, cuda.reason);
  for (auto kind : {topology_kind::torus, topology_kind::random_regular}) {
    CAPTURE(to_string(kind));
    rng random(8);
    const mixing_matrix w = test::mixing_of(kind, 1000, random);
    const std::size_t params = 300;  // a whole GPU tile and a part of one
    batched_sync cpu = test::batched_on_cpu(w, params);
    batched_sync gpu = batched_sync::create(*cuda.chosen, w, params).value();
    CHECK(gpu.block() == params);
    std::vector<float> x(params);
    std::vector<double> mu(params, 0.0);
    for (node_id i = 0; i < 1000; ++i) {
      for (auto& v : x)
        v = static_cast<float>(random.uniform(-1.0, 1.0));
      cpu.load(i, x);
      gpu.load(i, x);
      for (std::size_t k = 0; k < params; ++k)
        mu[k] += static_cast<double>(x[k]) / 1000.0;
    }
    const double start = gpu.stats(mu).distance_rms;
    for (int r = 0; r < 20; ++r) {
      cpu.round();
      gpu.round();
    }
    std::vector<float> a(params), b(params);
    std::size_t wrong = 0;
    for (node_id i = 0; i < 1000; ++i) {
      cpu.store(i, a);
      gpu.store(i, b);
      for (std::size_t k = 0; k < params; ++k)
        wrong += std::bit_cast<std::uint32_t>(a[k]) != std::bit_cast<std::uint32_t>(b[k]);
    }
    CHECK(wrong == 0);
    CHECK(gpu.stats(mu).distance_rms == cpu.stats(mu).distance_rms);
    CHECK(gpu.stats(mu).distance_rms < 0.5 * start);  // it did mix
  }
}

TEST_CASE("the block follows how far apart the rows a row reads lie") {
  rng random(5);
  // A torus row reads rows within about 2 sqrt(n) of itself: those stay in cache at any block.
  const mixing_matrix torus = test::mixing_of(topology_kind::torus, 10000, random);
  CHECK(test::batched_on_cpu(torus, 1000).block() == 128);
  // Random neighbours read all over a block, so the block is kept as small as it goes (16 values
  // per node, 6.4 MB at 10^5 nodes) for as much of it as possible to stay in cache.
  const mixing_matrix scattered = test::mixing_of(topology_kind::random_regular, 100000, random);
  CHECK(test::batched_on_cpu(scattered, 256).block() == 16);
}

}  // namespace
}  // namespace mws::sim
