// The random stream of a node: xoshiro256** seeded through splitmix64.
//
// Owned by the node, seeded from config::seed, so that a simulation replays from its seed. The
// output is defined here bit for bit (no std::uniform_int_distribution, whose results differ
// between standard libraries), so a trace is the same on every platform.
#pragma once

#include <cstdint>

namespace mws::gossip {

class rng {
 public:
  explicit rng(std::uint64_t seed) noexcept {
    for (auto& s : s_)
      s = splitmix64(seed);
  }

  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // An independent generator for a named sub-stream (a node, a link, a workload), so that
  // adding draws to one component does not shift the numbers of another.
  rng fork(std::uint64_t stream) const noexcept {
    std::uint64_t sm = s_[0] ^ (stream * 0xd1342543de82ef95ull) ^ rotl(s_[2], 17);
    return rng(splitmix64(sm) ^ stream);
  }

  // Uniform in [0, n): Lemire's multiply-shift with rejection, exactly uniform; 0 for n <= 1
  // without a draw.
  std::uint64_t below(std::uint64_t n) noexcept {
    if (n <= 1) return 0;
    for (;;) {
      const u128 m = static_cast<u128>(next()) * n;
      const auto low = static_cast<std::uint64_t>(m);
      if (low >= n || low >= (0 - n) % n) return static_cast<std::uint64_t>(m >> 64);
    }
  }

  // Uniform in [0, 1) with 53 random bits.
  double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1p-53; }

  static std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  __extension__ typedef unsigned __int128 u128;  // GCC and Clang; -Wpedantic knows the spelling
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4] = {};
};

}  // namespace mws::gossip
