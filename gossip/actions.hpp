// What a state machine asks its driver to do.
//
// The node calls its action_sink synchronously from inside on_message / on_tick / ...; the
// driver carries the actions out in the order they were emitted: the runtime with sockets and
// timers, the simulator in virtual time, tests with recording_sink. Payloads of sent messages
// are immutable and shared; the driver may keep, duplicate or drop them. With an asynchronous
// backend (CUDA), a payload's bytes are final once the node's stream has finished the work
// enqueued before the send was emitted.
#pragma once

#include <vector>

#include "gossip/message.hpp"
#include "gossip/types.hpp"

namespace mws::gossip {

class action_sink {
 public:
  virtual ~action_sink() = default;
  // Deliver `msg` to `to` (best effort: the algorithms tolerate loss, duplication, reordering).
  virtual void send(peer_id to, message msg) = 0;
  // Call the node's on_tick at `at_us` or later. A node may arm several timers; a timer is
  // never cancelled (on_tick checks what is due), so the driver may coalesce equal times.
  virtual void arm_timer(time_us at_us) = 0;
};

struct action {
  enum class type : std::uint8_t { send, timer };
  type what = type::send;
  peer_id to;       // send
  message msg;      // send
  time_us at_us{};  // timer
};

// Records every action in order: for tests and for drivers that prefer a list.
class recording_sink final : public action_sink {
 public:
  void send(peer_id to, message msg) override {
    actions.push_back({action::type::send, to, std::move(msg), 0});
  }
  void arm_timer(time_us at_us) override {
    actions.push_back({action::type::timer, peer_id{}, message{}, at_us});
  }
  std::vector<action> actions;
};

}  // namespace mws::gossip
