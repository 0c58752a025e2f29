#include "simulations/theory.hpp"

#include <cmath>
#include <numbers>

#include <doctest/doctest.h>

#include "simulations/batched.hpp"

namespace mws::sim {
namespace {

graph build(topology_kind kind, node_id n, std::uint64_t seed) {
  rng random(seed);
  topology_spec spec;
  spec.kind = kind;
  spec.nodes = n;
  auto g = make_topology(spec, random);
  REQUIRE(g.has_value());
  return *g;
}

TEST_CASE("Metropolis-Hastings weights are symmetric and doubly stochastic") {
  const graph g = build(topology_kind::small_world, 50, 3);
  const mixing_matrix w = metropolis_hastings(g);
  std::vector<double> col(w.n, 0.0);
  for (node_id i = 0; i < w.n; ++i) {
    double row = 0.0;
    for (auto k = w.offsets[i]; k < w.offsets[i + 1]; ++k) {
      row += w.weights[k];
      col[w.columns[k]] += w.weights[k];
      CHECK(w.weights[k] > 0.0);
      if (k > w.offsets[i]) CHECK(w.columns[k - 1] < w.columns[k]);
    }
    CHECK(row == doctest::Approx(1.0).epsilon(1e-12));
  }
  for (double c : col)
    CHECK(c == doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("SLEM matches closed forms for the ring and the hypercube") {
  // Ring, MH weights 1/3: eigenvalues (1 + 2 cos(2 pi k / n)) / 3.
  const auto ring = mixing_spectrum(metropolis_hastings(build(topology_kind::ring, 64, 1)));
  CHECK(ring.slem == doctest::Approx((1.0 + 2.0 * std::cos(2.0 * std::numbers::pi / 64)) / 3.0));
  // Hypercube of dimension 6, MH weights 1/7: eigenvalues (7 - 2k) / 7, so slem = 5/7.
  const auto cube = mixing_spectrum(metropolis_hastings(build(topology_kind::hypercube, 64, 1)));
  CHECK(cube.slem == doctest::Approx(5.0 / 7.0));
  CHECK(cube.lambda_min == doctest::Approx(-5.0 / 7.0));
}

TEST_CASE("power iteration agrees with the dense solver") {
  for (auto kind : {topology_kind::torus, topology_kind::random_regular}) {
    const auto w = metropolis_hastings(build(kind, 64, 5));
    const auto dense = mixing_spectrum(w);
    const auto power = mixing_spectrum(w, 0, 4000);
    CHECK_FALSE(power.exact);
    CHECK(power.slem == doctest::Approx(dense.slem).epsilon(1e-3));
  }
}

}  // namespace
}  // namespace mws::sim
