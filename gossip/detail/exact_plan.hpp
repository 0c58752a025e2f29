// The plan of one exact-mode epoch: its members in schedule order and who does what at each
// step of the one-peer hypercube with folding (README.md, "exact"). Internal to gossip/.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "gossip/detail/assert.hpp"
#include "gossip/message.hpp"
#include "gossip/types.hpp"

namespace mws::gossip::detail {

enum class step_role : std::uint8_t { none, give, fold, exchange, take };

// One epoch's plan: its members in schedule order (self included) and who does what when.
struct epoch_plan {
  round_t epoch = 0;
  std::vector<peer_id> members;
  std::uint64_t view = 0;
  std::size_t n = 0, p = 0, m = 0, idx = 0;
  std::uint32_t k = 0;

  epoch_plan() = default;
  epoch_plan(round_t e, std::vector<peer_id> ms, std::uint64_t v, peer_id self)
      : epoch(e), members(std::move(ms)), view(v) {
    n = members.size();
    p = std::bit_floor(n);
    k = static_cast<std::uint32_t>(std::countr_zero(p));
    m = n - p;
    idx =
        static_cast<std::size_t>(std::find(members.begin(), members.end(), self) - members.begin());
    MWS_ASSERT(idx < n && k + 1 <= max_exact_step);
  }

  std::uint32_t last_step() const noexcept { return k + 1; }

  // What member `i` does at `step`, and with which member index.
  step_role part_of(std::size_t i, std::uint32_t step, std::size_t* partner) const noexcept {
    if (step == 0 || step == last_step()) {
      if (m == 0) return step_role::none;
      if (i >= p) {
        *partner = i - p;
        return step == 0 ? step_role::give : step_role::take;
      }
      if (i < m) {
        *partner = i + p;
        return step == 0 ? step_role::fold : step_role::give;
      }
      return step_role::none;
    }
    if (i >= p) return step_role::none;
    *partner = i ^ (std::size_t{1} << (step - 1));
    return step_role::exchange;
  }

  // What this node does at `step`, and with whom.
  step_role mine(std::uint32_t step, peer_id* partner, bool* low = nullptr) const noexcept {
    std::size_t j = 0;
    const step_role r = part_of(idx, step, &j);
    if (r != step_role::none) *partner = members[j];
    if (low) *low = idx < j;
    return r;
  }

  // Whether this node takes a value from `from` at `step` (fold, exchange or take).
  bool takes_from(std::uint32_t step, peer_id from) const noexcept {
    if (step > last_step()) return false;
    peer_id partner;
    const step_role r = mine(step, &partner);
    return (r == step_role::fold || r == step_role::exchange || r == step_role::take) &&
           partner == from;
  }

  // Whether this node gives to `to` at `step` (an extra member's mass, or half of it back).
  bool gives_to(std::uint32_t step, peer_id to) const noexcept {
    if (step > last_step()) return false;
    peer_id partner;
    return mine(step, &partner) == step_role::give && partner == to;
  }
};

}  // namespace mws::gossip::detail
