// The simulator's only source of randomness: gossip's xoshiro256** seeded through splitmix64, with
// distributions written out here so that one seed gives the same numbers on every platform and
// standard library (std::*_distribution is implementation-defined, so it is not used).
//
// Every random draw of a run comes from a generator derived from the scenario seed with
// `fork(stream)`, so adding draws to one component does not shift the numbers of another.
#pragma once

#include <cmath>
#include <cstdint>

#include "gossip/rng.hpp"

namespace mws::sim {

// exp(x) from +, *, and exact scaling only (no libm), so it rounds the same everywhere.
// Relative error below 1e-15 for |x| < 700.
inline double deterministic_exp(double x) noexcept {
  if (x > 709.0) return INFINITY;
  if (x < -745.0) return 0.0;
  const double ln2 = 0.6931471805599453;
  const double k = std::nearbyint(x / ln2);
  const double r = x - k * ln2;  // |r| <= ln2 / 2
  double term = 1.0, sum = 1.0;
  for (int i = 1; i <= 18; ++i) {
    term = term * r / i;
    sum += term;
  }
  return std::ldexp(sum, static_cast<int>(k));
}

// The generator is gossip's (one xoshiro256** in the code base); the simulator adds the
// distributions it needs.
class rng : public gossip::rng {
 public:
  explicit rng(std::uint64_t seed) noexcept : gossip::rng(seed) {}
  explicit rng(const gossip::rng& base) noexcept : gossip::rng(base) {}

  rng fork(std::uint64_t stream) const noexcept { return rng(gossip::rng::fork(stream)); }

  // Uniform in [0, 1) with 53 random bits.
  double uniform01() noexcept { return unit(); }

  double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform01(); }

  bool bernoulli(double p) noexcept { return p > 0.0 && uniform01() < p; }

  // Standard normal approximated by the Irwin-Hall sum of 12 uniforms (bounded to +-6, which is
  // what a latency jitter wants anyway), chosen over Box-Muller because it needs no libm.
  double normal() noexcept {
    double sum = 0.0;
    for (int i = 0; i < 12; ++i)
      sum += uniform01();
    return sum - 6.0;
  }
};

}  // namespace mws::sim
