// Vocabulary shared by every averaging state machine: ids, time, the model manifest, the
// configuration a driver hands to make_node().
//
// Nothing here knows about sockets, threads or clocks: time is an integer the driver passes in
// (microseconds on whatever clock it likes, virtual or real), randomness comes from the seed.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu/dtype.hpp"

namespace mws::gossip {

// A peer, as the driver numbers it (the runtime maps identity keys to these, the simulator uses
// node indices). Strong type so that it cannot be confused with a count or an index.
struct peer_id {
  std::uint32_t value = 0;
  friend constexpr auto operator<=>(peer_id, peer_id) = default;
};

// Time as the driver sees it, in microseconds. Only differences and order matter.
using time_us = std::int64_t;

// A round of the sync and exact algorithms.
using round_t = std::uint64_t;

enum class algorithm : std::uint8_t {
  push_sum = 0,  // asynchronous, directed; running sums per link (or plain, by flag)
  pairwise = 1,  // randomized pairwise averaging with propose / accept / commit
  sync = 2,      // rounds with Metropolis-Hastings weights and a staleness bound
  exact = 3,     // one-peer hypercube schedule, bit-identical exact mean
};

// One named tensor of the model. Every node of a mesh holds the same manifest, in the same order.
struct tensor_spec {
  std::string name;
  gpu::dtype type = gpu::dtype::f32;
  std::size_t numel = 0;
};
using manifest = std::vector<tensor_spec>;

// Limits that bound what a node stores for its peers and what a message may carry.
inline constexpr std::size_t max_tensors = 4096;           // tensors in a manifest
inline constexpr std::size_t max_tensor_name_bytes = 256;  // bytes of one tensor name
inline constexpr std::size_t max_peers = 65536;            // entries of config::peers

struct config {
  algorithm algo = algorithm::push_sum;
  peer_id self;
  // push_sum, pairwise, sync: the neighbours this node talks to (self excluded; order is the
  // order of random choice and of summation). exact: the whole membership, self included, the
  // same list on every node (its sorted order numbers the nodes of the hypercube).
  std::vector<peer_id> peers;

  // First timer. push_sum / pairwise: one action (a share, a proposal) per tick.
  // sync / exact: the tick retransmits what a stalled neighbour may be missing.
  time_us start_us = 0;
  time_us tick_interval_us = 1000;
  // pairwise: how long a proposer waits for an answer; and how often a node that accepted
  // re-sends its accept while it waits for the commit. sync / exact: a node stalled this long
  // re-sends its latest value.
  time_us timeout_us = 5000;

  std::uint32_t fanout = 1;  // push_sum: peers per tick (share 1/(fanout+1) each)
  bool running_sums = true;  // push_sum: false = plain push-sum (drifts under loss)
  // push_sum with running sums: never add to a running sum its receiver has not acked; re-send
  // it unchanged every timeout_us instead. Every running sum then starts a new frame, so a
  // receiver never needs the last one it applied (rho) and keeps no tensor per in-link: memory
  // is O(1) models per node instead of O(peers). Still exact under loss and duplication (acks
  // and re-sends); every node of a mesh must use the same setting.
  bool hold_unacked = false;
  // hold_unacked: at most this many running sums held at once over all links (0: one per link).
  // Each held running sum is a model-sized tensor, so this bounds a node's memory.
  std::uint32_t held_max = 0;
  // hold_unacked: give a held running sum up after this many unanswered re-sends (0: never).
  // Giving up loses its mass unless the receiver applied it, so only a driver whose transport
  // loses nothing while a peer is reachable (TCP) should set it: it unblocks a node whose peer
  // stays in the membership but never answers. A held sum is also given up when its link goes
  // down (its peer failed), so a node holds nothing for failed peers.
  std::uint32_t held_resends_max = 0;
  std::uint32_t staleness = 0;     // sync: bound s (0 = bulk-synchronous)
  round_t sync_rounds = 0;         // sync: stop after this many rounds; 0 = forever
  std::uint32_t exact_epochs = 1;  // exact: epochs to run (each reaches the mean); 0 = forever
  time_us epoch_interval_us = 0;   // exact: earliest start of epoch e+1 after start of epoch e
  // exact: give the current step up after this many unanswered re-sends (0: never); the epoch
  // then ends early. For drivers whose transport loses nothing while a peer is up (TCP).
  std::uint32_t stall_resends_max = 0;
  std::uint64_t seed = 0;  // the node's private random stream
};

}  // namespace mws::gossip
