// Batched rounds on the CPU backend, for tests.
#pragma once

#include <cstddef>

#include <doctest/doctest.h>

#include "gpu/backend.hpp"
#include "simulations/batched.hpp"

namespace mws::sim::test {

inline gpu::backend& cpu_backend() {
  static const auto cpu = gpu::make_cpu_backend();
  return *cpu;
}

// The Metropolis-Hastings matrix of a topology of this kind and size.
inline mixing_matrix mixing_of(topology_kind kind, node_id nodes, rng& random) {
  topology_spec spec;
  spec.kind = kind;
  spec.nodes = nodes;
  auto g = make_topology(spec, random);
  REQUIRE(g.has_value());
  return metropolis_hastings(*g);
}

inline batched_sync batched_on_cpu(const mixing_matrix& w, std::size_t params,
                                   std::size_t block = 0) {
  return batched_sync::create(cpu_backend(), w, params, block).value();
}

}  // namespace mws::sim::test
