// The averaging state machines, behind one interface, and the factory that makes them.
//
// A node owns its model (x, w) and all per-peer state (running sums, locks, buffered values).
// It is driven by one thread at a time, by one driver: inputs are the calls below, outputs go to
// the action_sink passed to each call. It reads no clock (time comes in as `now_us`), draws
// randomness only from its own rng seeded by config::seed, and mixes through the gpu::backend
// and gpu::stream given at construction, which must outlive it. With the CPU backend every
// operation has completed when a call returns.
//
// Lifecycle: make_node() -> start(now) (arms the first timer) -> any interleaving of
// on_message / on_tick / on_link_up / on_link_down / apply_local_update. All peers start up.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include <boost/system/error_code.hpp>

#include "gossip/actions.hpp"
#include "gossip/error.hpp"
#include "gossip/message.hpp"
#include "gossip/tensors.hpp"
#include "gossip/types.hpp"
#include "gpu/backend.hpp"

namespace mws::gossip {

using boost::system::error_code;

// Counters every node keeps; the algorithm-specific fields stay 0 where they do not apply.
struct node_stats {
  std::uint64_t sent = 0;      // messages emitted
  std::uint64_t received = 0;  // messages accepted by on_message
  std::uint64_t refused = 0;   // on_message returned an error
  std::uint64_t ignored = 0;   // valid but stale or duplicate (old running sum, ...)
  std::uint64_t local_updates = 0;
  // pairwise
  std::uint64_t exchanges_committed = 0;  // as proposer or responder
  std::uint64_t exchanges_rejected = 0;   // our proposals refused by a busy peer
  std::uint64_t exchanges_timed_out = 0;  // our proposals aborted without an answer
  std::uint64_t exchanges_abandoned = 0;  // accepted, then the proposer's link went down
  // 1 while this node, as responder, has accepted an exchange and waits for commit or abort.
  // When no node of a mesh is locked, no exchange is half-applied: the mesh's mass is exact.
  std::uint32_t locked = 0;
  // sync / exact
  round_t round = 0;                     // sync: completed mixing rounds. exact: completed epochs
  std::uint32_t step = 0;                // exact: step within the current epoch
  std::uint64_t stalls = 0;              // ticks spent waiting for a neighbour's value
  std::uint32_t max_staleness_used = 0;  // sync: largest (round - neighbour round) mixed in
  std::uint64_t resent = 0;              // retransmissions (sync, exact, pairwise accepts)
  std::uint64_t held_abandoned = 0;      // push_sum hold mode: held running sums given up
  // exact
  std::uint64_t epochs_abandoned = 0;  // epochs ended early (a member gone, views differing)
  std::uint64_t aborts_sent = 0;       // values answered with "not applied, never will be"
  std::uint64_t gives_returned = 0;    // mass handed over, refused, and taken back
  std::uint64_t late_values = 0;       // exchange values applied after their epoch ended
  std::uint32_t values_held_max = 0;   // most sent values (a model each) held at once for acks
  // push_sum, streamed receipt
  std::uint64_t shares_cut = 0;  // streamed shares cut short and completed from our estimate
};

// While a streamed share is open (averaging_node::begin_share), the elements it has mixed into
// x so far (all of the tensors before `tensor`, and the first `element` elements of that one)
// carry weight w + `weight`, the others w. With no share open, `weight` is 0.
struct share_progress {
  double weight = 0.0;
  std::size_t tensor = 0;
  std::size_t element = 0;
  // The weight of element k of tensor t.
  double of(double w, std::size_t t, std::size_t k) const noexcept {
    return t < tensor || (t == tensor && k < element) ? w + weight : w;
  }
};

class averaging_node {
 public:
  virtual ~averaging_node() = default;

  // Arms the first timer (config::start_us, or now_us if later).
  virtual void start(time_us now_us, action_sink& out) = 0;

  // A message from `from`, which the transport has authenticated (or the simulator vouches
  // for). A message this node refuses (unknown peer, wrong algorithm, tensors that do not match
  // the manifest, a non-finite weight) leaves the state untouched and returns the reason.
  // The payload may be borrowed (tensor_set::borrowed()): the node copies what it keeps.
  virtual error_code on_message(peer_id from, const message& msg, time_us now_us,
                                action_sink& out) = 0;

  // A timer armed earlier is due (the driver may call it late, or more often; both are safe).
  virtual void on_tick(time_us now_us, action_sink& out) = 0;

  // The transport (or the simulated network) lost or regained the link to `peer`.
  virtual void on_link_up(peer_id peer, time_us now_us, action_sink& out) = 0;
  virtual void on_link_down(peer_id peer, time_us now_us, action_sink& out) = 0;

  // x += delta (one view per manifest entry, same dtypes and sizes, in the backend's memory);
  // w += weight_delta. Allowed at any time, also in the middle of an exchange or a round.
  virtual error_code apply_local_update(std::span<const gpu::const_tensor_view> delta,
                                        double weight_delta, time_us now_us) = 0;

  // Adds `peer` to the neighbours, with its link down until on_link_up: for a runtime whose
  // membership changes while it runs. push_sum and exact support it (exact: a known peer may
  // then be named in set_members; its link is up); the others mix over a fixed neighbourhood
  // and return errc::not_supported. A peer already known
  // (or self) is errc::not_a_peer; beyond max_peers, errc::out_of_range. Peers are never
  // removed: a departed one stays down, and its running sums stay on record in case its last
  // messages still arrive.
  virtual error_code add_peer(peer_id peer) = 0;

  // Forgets all link state with `peer` (running sums, sequence numbers), as when the peer
  // restarted and lost its own: its next messages start a new link. Mass the old link had in
  // flight is lost. push_sum (exact: nothing to forget; pairwise and sync:
  // errc::not_supported); unknown peer: not_a_peer.
  virtual error_code reset_peer(peer_id peer) = 0;

  // exact only (errc::not_supported elsewhere): the members of the epochs this node begins from
  // now on, self included, in schedule order (which every member must use alike), and `view`, a
  // fingerprint of that list that every member computes alike; a value sent under another view
  // is refused with an abort. An epoch running whose member is missing from the new list ends
  // early, at once. Every member must be self or known (add_peer): else errc::not_a_peer.
  // Starts the next epoch no earlier than epoch_interval_us after the change.
  virtual error_code set_members(std::span<const peer_id> members, std::uint64_t view,
                                 time_us now_us, action_sink& out) = 0;

  // Streamed receipt of a share, for a runtime that mixes a model-sized message while its bytes
  // arrive instead of holding it whole: push_sum in hold mode (config::hold_unacked, running
  // sums); the others return errc::not_supported. One share at a time:
  // - begin_share checks the header as on_message would, and returns true when the tensor
  //   elements that follow are to be mixed, false when the share is a repeat (applied before;
  //   acked again) or otherwise has nothing to mix.
  // - share_part mixes the next elements, in manifest order, at most to the end of a tensor.
  // - end_share, after the last element: the share's weight joins w, and its ack goes out.
  // - abort_share: the rest never comes (its link ended, or its bytes were refused). The
  //   elements not received are completed from this node's own estimate (scaled by (w + share
  //   weight) / w), so every element's estimate stays a weighted mean of the initial values; the
  //   share then counts as applied, and nothing is acked.
  // Between begin and end, x mixes two weights: receiving() says where (a reader of the
  // estimate divides by share_progress::of). Sends, local updates and ticks go on meanwhile.
  // Calls out of order: errc::out_of_turn; a part that does not match the manifest:
  // errc::wrong_dtype or errc::wrong_numel, the share left open.
  virtual result<bool> begin_share(peer_id from, const message_header& header, time_us now_us,
                                   action_sink& out) = 0;
  virtual error_code share_part(gpu::const_tensor_view part) = 0;
  virtual error_code end_share(time_us now_us, action_sink& out) = 0;
  virtual error_code abort_share() = 0;
  virtual share_progress receiving() const noexcept = 0;

  virtual const model& state() const noexcept = 0;
  virtual const node_stats& stats() const noexcept = 0;
  virtual const config& settings() const noexcept = 0;
};

// Makes the node of `cfg.algo`. The model's manifest is the one every message must match.
// Preconditions (MWS_ASSERT): peers non-empty (push_sum: may be empty, see add_peer) and at
// most max_peers, self not among them (except
// for exact, where self must be in the list), no duplicates; fanout >= 1 and <= peers.size()
// (push_sum: any fanout >= 1; it sends to at most the live peers it has); tick_interval_us > 0,
// timeout_us > 0; model.w > 0.
std::unique_ptr<averaging_node> make_node(const config& cfg, model initial, gpu::backend& backend,
                                          gpu::stream& stream);

// Metropolis-Hastings weight of the edge between nodes of degrees d_i and d_j (sync).
constexpr double metropolis_hastings_weight(std::uint32_t d_i, std::uint32_t d_j) noexcept {
  return 1.0 / (1.0 + static_cast<double>(d_i > d_j ? d_i : d_j));
}

}  // namespace mws::gossip
