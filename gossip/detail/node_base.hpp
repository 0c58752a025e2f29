// What the four averaging nodes share: configuration, model, backend access, peer lookup,
// payload checks and the mixing helper. Internal to gossip/.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "gossip/node.hpp"
#include "gossip/rng.hpp"

namespace mws::gossip::detail {

// One operand of a mix over whole tensor sets: a * set.
struct set_term {
  const tensor_set* x = nullptr;
  float a = 0.0f;
};

class node_base : public averaging_node {
 public:
  node_base(const config& cfg, model initial, gpu::backend& backend, gpu::stream& stream);

  error_code apply_local_update(std::span<const gpu::const_tensor_view> delta, double weight_delta,
                                time_us now_us) override;
  error_code add_peer(peer_id) override { return errc::not_supported; }
  error_code reset_peer(peer_id) override { return errc::not_supported; }
  error_code set_members(std::span<const peer_id>, std::uint64_t, time_us, action_sink&) override {
    return errc::not_supported;
  }
  result<bool> begin_share(peer_id, const message_header&, time_us, action_sink&) override {
    return errc::not_supported;
  }
  error_code share_part(gpu::const_tensor_view) override { return errc::not_supported; }
  error_code end_share(time_us, action_sink&) override { return errc::not_supported; }
  error_code abort_share() override { return errc::not_supported; }
  share_progress receiving() const noexcept override { return {}; }
  const model& state() const noexcept override { return model_; }
  const node_stats& stats() const noexcept override { return stats_; }
  const config& settings() const noexcept override { return cfg_; }

 protected:
  // Position of `p` in cfg_.peers, if it is there.
  std::optional<std::size_t> peer_index(peer_id p) const noexcept;

  // Appends `p` to cfg_.peers with its link down; returns its index, or the add_peer error.
  result<std::size_t> append_peer(peer_id p);

  // set_members' checks: self listed, every other member known, no duplicates.
  error_code check_members(std::span<const peer_id> members) const;

  // Refuses a message whose payload does not match the manifest or whose weight is not finite
  // (or not positive, when `positive_weight`).
  error_code check_payload(const message& msg, bool positive_weight) const noexcept;

  // out = sum_k terms[k].a * terms[k].x, tensor by tensor, in the order given; more than
  // gpu::backend::max_terms terms are chained (out = 1*out + next terms). `out` may be
  // terms[0].x (in place) and no later term.
  error_code mix(tensor_set& out, std::span<const set_term> terms);

  // A new owned set holding a copy of `src`.
  result<payload_ptr> snapshot(const tensor_set& src);
  // `p` itself when it owns or keeps alive its data, else a copy.
  result<payload_ptr> keep(const payload_ptr& p);

  void send(action_sink& out, peer_id to, message msg) {
    ++stats_.sent;
    out.send(to, std::move(msg));
  }

  config cfg_;
  model model_;
  gpu::backend& backend_;
  gpu::stream& stream_;
  rng rng_;
  node_stats stats_;
  std::vector<bool> up_;  // per peer index: link up

 private:
  std::vector<std::pair<peer_id, std::size_t>> index_;  // sorted by id
};

std::unique_ptr<averaging_node> make_push_sum_node(const config&, model, gpu::backend&,
                                                   gpu::stream&);
std::unique_ptr<averaging_node> make_pairwise_node(const config&, model, gpu::backend&,
                                                   gpu::stream&);
std::unique_ptr<averaging_node> make_sync_node(const config&, model, gpu::backend&, gpu::stream&);
std::unique_ptr<averaging_node> make_exact_node(const config&, model, gpu::backend&, gpu::stream&);

}  // namespace mws::gossip::detail
