// Batched rounds on the CPU backend, for tests.
#pragma once

#include <cstddef>

#include "gpu/backend.hpp"
#include "simulations/batched.hpp"

namespace mws::sim::test {

inline gpu::backend& cpu_backend() {
  static const auto cpu = gpu::make_cpu_backend();
  return *cpu;
}

inline batched_sync batched_on_cpu(const mixing_matrix& w, std::size_t params,
                                   std::size_t block = 0) {
  return batched_sync::create(cpu_backend(), w, params, block).value();
}

}  // namespace mws::sim::test
