// The virtual network between simulated nodes: per-link latency, bandwidth with serialisation
// delay and a bounded queue per directed link, loss, duplication, partitions (symmetric or
// one-way) that heal at a given time, crashed and slow nodes.
//
// The network decides, for one message sent at `now` from a to b, whether and when it arrives
// (zero, one or two arrival times). It holds no messages itself: the simulation schedules the
// deliveries. All randomness comes from the rng passed in, so a run replays from its seed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "simulations/engine.hpp"
#include "simulations/error.hpp"
#include "simulations/rng.hpp"

namespace mws::sim {

enum class latency_kind : std::uint8_t { constant, uniform, normal, lognormal };

result<latency_kind> parse_latency_kind(std::string_view name);
std::string_view to_string(latency_kind kind) noexcept;

struct latency_model {
  latency_kind kind = latency_kind::constant;
  // constant: a; uniform: [a, b]; normal: mean a, deviation b (clamped at >= 0);
  // lognormal: median a, log-space deviation b. Microseconds.
  double a_us = 1000.0;
  double b_us = 0.0;

  sim_time_us sample(rng& random) const noexcept;
};

struct link_model {
  latency_model latency;
  double bandwidth_bytes_per_s = 0.0;  // 0 = unlimited (no serialisation delay, no queue)
  std::uint64_t queue_bytes_max = std::uint64_t{64} << 20;  // per directed link; tail drop
  double loss_p = 0.0;
  double duplicate_p = 0.0;
};

// Nodes in `side` are cut off from the rest between start and heal. Symmetric cuts both
// directions; one-way cuts only messages from `side` to the rest.
struct partition {
  sim_time_us start_us = 0;
  sim_time_us heal_us = 0;
  std::vector<node_id> side;
  bool one_way = false;
};

struct crash {
  node_id node = 0;
  sim_time_us at_us = 0;
  sim_time_us restart_us = -1;  // < 0: never restarts
};

struct slow_node {
  node_id node = 0;
  double tick_factor = 1.0;        // timers run this many times slower
  double processing_factor = 1.0;  // deliveries to it are delayed by (factor - 1) x latency
};

// A link model that applies only to the links of one node (both directions), overriding the
// default (for instance one node on a slow uplink).
struct link_override {
  node_id node = 0;
  link_model model;
};

struct network_spec {
  link_model links;
  std::vector<link_override> overrides;
  std::vector<partition> partitions;
  std::vector<crash> crashes;
  std::vector<slow_node> slow;
};

// Checks ranges (probabilities in [0, 1], non-negative latencies and rates, node ids < n,
// heal after start); the message names the offending field.
result<bool> validate(const network_spec& spec, node_id nodes);

struct network_counters {
  std::uint64_t sent = 0;
  std::uint64_t delivered_scheduled = 0;
  std::uint64_t lost = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t cut = 0;          // dropped by a partition
  std::uint64_t queue_drops = 0;  // dropped at a full link queue
  std::uint64_t to_down_node = 0;
  std::uint64_t bytes_sent = 0;
};

class network {
 public:
  network(node_id nodes, network_spec spec);

  // Arrival times for a message of `bytes` sent now from a to b (empty: dropped). A message
  // whose receiver is down when it arrives is dropped by the simulation at delivery.
  void send(sim_time_us now_us, node_id a, node_id b, std::uint64_t bytes, rng& random,
            std::vector<sim_time_us>& arrivals);

  bool cut(sim_time_us now_us, node_id a, node_id b) const noexcept;
  bool down(node_id n) const noexcept { return down_[n] != 0; }
  void set_down(node_id n, bool is_down) noexcept { down_[n] = is_down ? 1 : 0; }
  double tick_factor(node_id n) const noexcept { return tick_factor_[n]; }

  const network_spec& spec() const noexcept { return spec_; }
  const network_counters& counters() const noexcept { return counters_; }

 private:
  struct link_state {
    sim_time_us busy_until_us = 0;
  };
  const link_model& model_for(node_id a, node_id b) const noexcept;

  node_id n_;
  network_spec spec_;
  std::vector<char> down_;
  std::vector<double> tick_factor_;
  std::vector<double> processing_factor_;
  std::vector<int> override_of_;                         // index into spec_.overrides, or -1
  std::vector<std::vector<char>> partition_side_;        // [partition][node]
  std::unordered_map<std::uint64_t, link_state> links_;  // looked up only, never iterated
  network_counters counters_;
};

}  // namespace mws::sim
