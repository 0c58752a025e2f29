// The messages of the averaging algorithms, as the state machines see them: a fixed header
// struct plus an optional payload of tensors (one per manifest entry, same order).
//
// The wire form (FlatBuffers header, then raw tensor bytes) is codec.hpp's business; the
// simulator's fast mode hands these structs over directly.
#pragma once

#include <cstdint>
#include <string_view>

#include "gossip/tensors.hpp"
#include "gossip/types.hpp"

namespace mws::gossip {

enum class message_kind : std::uint8_t {
  // push_sum. seq: per-link sequence number (1, 2, ...). weight: the running sum of w sent on
  // this link (running sums), or the share of w (plain). Payload: the running sum of x sent on
  // this link, or the share of x (plain). round: the frame of the running sum (the seq it is
  // relative to, 0 = since the start). ack: the seq of the last running sum the sender of this
  // message applied from its receiver (lets that one rebase its running sum; README.md).
  push_sum_running = 0,
  push_sum_plain = 1,
  // pairwise. seq: the exchange id, chosen by the proposer. Payload on propose and accept: the
  // sender's x at that moment; weight: its w.
  pairwise_propose = 2,
  pairwise_accept = 3,
  pairwise_reject = 4,  // the receiver is busy in another exchange; no payload
  pairwise_commit = 5,  // the proposer applied the exchange; no payload
  pairwise_abort = 6,   // the proposer did not apply (and never will); no payload
  // sync. round: the round whose value this is; degree: the sender's neighbour count (for the
  // Metropolis-Hastings weight); payload and weight: the sender's x and w of that round.
  sync_value = 7,
  // exact. round: the epoch; step: the step of the schedule (README.md, "exact"); payload and
  // weight: the sender's x and w entering that step (weight >= 0: an extra member that handed
  // its mass over holds 0); view: the fingerprint of the epoch's membership; seq: 1 when the
  // sender is stalled and asks for a repeat.
  exact_value = 8,
  // push_sum with running sums: "I applied your running sum `seq` of frame `round`", sent right
  // after applying one (and again for a duplicate), so that the sender can restart its running
  // sum from zero (README.md). No payload.
  push_sum_ack = 9,
  // exact: "I did not apply your value of epoch `round`, step `step`, and never will" (the
  // epoch ended here first, or our views of its membership differ). A sender that gave its mass
  // takes it back. seq: the epoch the sender of the abort runs, or else would begin next. No
  // payload.
  exact_abort = 10,
  // exact: "I applied your value of epoch `round`, step `step`": the sender may drop its copy.
  // No payload.
  exact_ack = 11,
};
inline constexpr std::uint8_t message_kind_count = 12;

std::string_view to_string(message_kind k) noexcept;

// True for the kinds that carry one tensor per manifest entry.
constexpr bool carries_tensors(message_kind k) noexcept {
  switch (k) {
    case message_kind::pairwise_reject:
    case message_kind::pairwise_commit:
    case message_kind::pairwise_abort:
    case message_kind::push_sum_ack:
    case message_kind::exact_abort:
    case message_kind::exact_ack:
      return false;
    default:
      return true;
  }
}

struct message_header {
  message_kind kind = message_kind::push_sum_running;
  std::uint64_t seq = 0;
  round_t round = 0;
  std::uint32_t step = 0;
  std::uint32_t degree = 0;
  double weight = 0.0;
  std::uint64_t ack = 0;
  std::uint64_t view = 0;
};

// Upper bounds the codec enforces on header counters.
inline constexpr std::uint32_t max_exact_step = 64;

struct message {
  message_header header;
  payload_ptr tensors;  // null exactly when !carries_tensors(header.kind)
};

}  // namespace mws::gossip
