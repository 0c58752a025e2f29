// The discrete-event core: a virtual clock and a queue of events ordered by (time, sequence).
//
// Single-threaded and deterministic: events at equal times run in the order they were
// scheduled, nothing reads a real clock, and every dispatched event is folded into a 64-bit
// trace hash (time, kind, source, destination, digest of the message). Same seed and same build
// give the same hash; printing it at the end of a run is how a result is tied to its replay.
//
// The engine knows no protocol: an event carries a kind, two node ids, a digest and an opaque
// 64-bit argument (an index into the owner's message store); the owner's dispatcher gives it
// meaning.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include "simulations/topology.hpp"

namespace mws::sim {

// Virtual time in microseconds (gossip::time_us has the same unit).
using sim_time_us = std::int64_t;

enum class event_kind : std::uint8_t {
  deliver = 0,    // a message arrives at dst
  tick = 1,       // a node's timer is due
  crash = 2,      // a node stops
  restart = 3,    // a node comes back
  link_down = 4,  // partition starts (arg: partition index)
  link_up = 5,    // partition heals
  sample = 6,     // the recorder samples the metrics
  local_update = 7,
};

struct event {
  sim_time_us at_us = 0;
  std::uint64_t seq = 0;
  event_kind kind = event_kind::tick;
  node_id src = 0;
  node_id dst = 0;
  std::uint64_t digest = 0;
  std::uint64_t arg = 0;
};

// FNV-1a style fold of 64-bit words with a final avalanche per word (cheap, order-sensitive).
constexpr std::uint64_t hash_combine(std::uint64_t h, std::uint64_t v) noexcept {
  v *= 0x9e3779b97f4a7c15ull;
  v ^= v >> 32;
  h ^= v;
  h *= 0x100000001b3ull;
  return h ^ (h >> 29);
}

class engine {
 public:
  sim_time_us now_us() const noexcept { return now_us_; }
  std::uint64_t trace_hash() const noexcept { return trace_; }
  std::uint64_t dispatched() const noexcept { return dispatched_; }
  std::size_t pending() const noexcept { return queue_.size(); }
  std::size_t pending_max() const noexcept { return pending_max_; }

  // Schedules at max(at_us, now). Returns the event's sequence number.
  std::uint64_t schedule(event e) {
    if (e.at_us < now_us_) e.at_us = now_us_;
    e.seq = next_seq_++;
    queue_.push(e);
    if (queue_.size() > pending_max_) pending_max_ = queue_.size();
    return e.seq;
  }

  // Runs events with time <= until_us, in order; `dispatch` handles each. Returns false when the
  // queue ran dry first. The clock ends at until_us either way.
  template <class Dispatch>
  bool run_until(sim_time_us until_us, Dispatch&& dispatch) {
    while (!queue_.empty() && queue_.top().at_us <= until_us) {
      const event e = queue_.top();
      queue_.pop();
      now_us_ = e.at_us;
      ++dispatched_;
      trace_ = hash_combine(trace_, static_cast<std::uint64_t>(e.at_us));
      trace_ = hash_combine(trace_, (static_cast<std::uint64_t>(e.kind) << 56) ^
                                        (static_cast<std::uint64_t>(e.src) << 28) ^ e.dst);
      trace_ = hash_combine(trace_, e.digest);
      dispatch(e);
    }
    const bool more = !queue_.empty();
    if (until_us > now_us_) now_us_ = until_us;
    return more;
  }

 private:
  struct later {
    bool operator()(const event& a, const event& b) const noexcept {
      return a.at_us != b.at_us ? a.at_us > b.at_us : a.seq > b.seq;
    }
  };
  std::priority_queue<event, std::vector<event>, later> queue_;
  sim_time_us now_us_ = 0;
  std::uint64_t next_seq_ = 0;
  std::uint64_t trace_ = 0xcbf29ce484222325ull;
  std::uint64_t dispatched_ = 0;
  std::size_t pending_max_ = 0;
};

}  // namespace mws::sim
