// A study of SWIM membership (gossip/membership.hpp) at scale, on the simulator's engine and
// virtual network: the very state machine a node ships, thousands of instances in one process.
//
// One run, in phases, on n nodes (node n-1 is the late joiner, n-2 leaves, n-3 crashes):
//   bootstrap  nodes 0..n-2 start knowing each other (one push-pull reply each), at random
//              moments within start_spread_us, then settle until the broadcasts this queued
//              have drained;
//   join       node n-1 joins through seed n0: how long until 99.9% of the others list it;
//   leave      node n-2 leaves gracefully and stops: until 99.9% list it as left;
//   crash      node n-3 stops without a word: until the first suspicion, and until 99.9% list
//              it as dead;
// while the network loses `loss_p` of all messages. Every "failed" event about a node that was
// alive at the time is a false positive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "gossip/membership.hpp"
#include "simulations/network.hpp"

namespace mws::sim {

// Where a running study is, for a progress line: a run at 10,000 nodes under loss takes hours.
struct membership_progress {
  const char* phase = "";  // "settle", "join", "leave" or "crash"
  double simulated_s = 0;
  std::uint64_t events = 0;          // dispatched so far
  std::uint64_t suspicions = 0;      // suspicion events so far
  std::uint64_t messages = 0;        // sent so far
  std::uint64_t false_failures = 0;  // so far
  std::size_t backlog = 0;           // the longest broadcast queue of a bootstrap node
};

struct membership_study_config {
  node_id nodes = 1000;
  double loss_p = 0.0;
  latency_model latency{latency_kind::uniform, 1000.0, 10'000.0};
  // Under the probe timeout, so that a node probed before it started answers the indirect
  // probes: the spread alone causes no suspicion.
  sim_time_us start_spread_us = 400'000;
  sim_time_us settle_us = 30'000'000;
  // The settle phase ends when the broadcast queues have drained, or at this (0: 20 times
  // settle_us). Under loss the queues never drain (news of suspicions keeps coming), so the
  // settle runs to this cap; a big mesh can be given a shorter one.
  sim_time_us settle_max_us = 0;
  sim_time_us phase_us = 120'000'000;  // observation time of each phase
  double reach = 0.999;                // fraction of nodes that counts as "everyone"
  // Protocol timings (gossip::membership_config's defaults: 1 s probes, 0.5 s timeout, ...).
  gossip::time_us probe_interval_us = 1'000'000;
  gossip::time_us probe_timeout_us = 500'000;
  gossip::time_us push_pull_interval_us = 30'000'000;
  std::uint64_t seed = 1;
  // Called every progress_interval_us of simulated time, on the study's thread; empty: never.
  // Reporting splits the run into steps but does not change it (the same trace hash).
  std::function<void(const membership_progress&)> on_progress;
  sim_time_us progress_interval_us = 10'000'000;
};

struct membership_study_result {
  double join_spread_s = -1;  // -1: did not reach `reach` within the phase
  double leave_spread_s = -1;
  double first_suspicion_s = -1;     // after the crash
  double failure_spread_s = -1;      // after the crash, until `reach` list it dead
  std::uint64_t false_failures = 0;  // "failed" about a node that was alive
  std::uint64_t suspicions = 0;      // all suspicion events
  std::uint64_t messages = 0;        // sent by all nodes
  double messages_per_node_s = 0;    // sent per node per simulated second
  std::uint64_t trace_hash = 0;
  double simulated_s = 0;
};

// Runs the study; throws std::invalid_argument on a config that cannot run (fewer than 8 nodes,
// a probability outside [0, 1]).
membership_study_result run_membership_study(const membership_study_config& config);

// The key of simulated node i (its index in the first bytes) and back.
gossip::node_key membership_key(node_id i);
node_id membership_index(const gossip::node_key& k);

}  // namespace mws::sim
