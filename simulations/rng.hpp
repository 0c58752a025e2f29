// The simulator's only source of randomness: xoshiro256** seeded through splitmix64, with
// distributions written out here so that one seed gives the same numbers on every platform and
// standard library (std::*_distribution is implementation-defined, so it is not used).
//
// Every random draw of a run comes from a generator derived from the scenario seed with
// `fork(stream)`, so adding draws to one component does not shift the numbers of another.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace mws::sim {

__extension__ typedef unsigned __int128 uint128_t;

constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

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

class rng {
 public:
  explicit rng(std::uint64_t seed) noexcept {
    std::uint64_t sm = seed;
    for (auto& word : s_)
      word = splitmix64(sm);
  }

  std::uint64_t next() noexcept {
    const std::uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = std::rotl(s_[3], 45);
    return result;
  }

  // An independent generator for a named sub-stream (a node, a link, a workload).
  rng fork(std::uint64_t stream) const noexcept {
    std::uint64_t sm = s_[0] ^ (stream * 0xd1342543de82ef95ull) ^ std::rotl(s_[2], 17);
    return rng(splitmix64(sm) ^ stream);
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform01() noexcept { return static_cast<double>(next() >> 11) * 0x1p-53; }

  double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform01(); }

  // Uniform integer in [0, bound), without modulo bias (Lemire's method).
  std::uint64_t below(std::uint64_t bound) noexcept {
    if (bound <= 1) return 0;
    uint128_t m = static_cast<uint128_t>(next()) * bound;
    auto low = static_cast<std::uint64_t>(m);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<uint128_t>(next()) * bound;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64);
  }

  bool bernoulli(double p) noexcept { return p > 0.0 && uniform01() < p; }

  // Standard normal approximated by the Irwin-Hall sum of 12 uniforms (bounded to +-6, which is
  // what a latency jitter wants anyway), chosen over Box-Muller because it needs no libm.
  double normal() noexcept {
    double sum = 0.0;
    for (int i = 0; i < 12; ++i)
      sum += uniform01();
    return sum - 6.0;
  }

 private:
  std::uint64_t s_[4];
};

}  // namespace mws::sim
