#include "gossip/node.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/node_base.hpp"

namespace mws::gossip {

std::unique_ptr<averaging_node> make_node(const config& cfg, model initial, gpu::backend& backend,
                                          gpu::stream& stream) {
  switch (cfg.algo) {
    case algorithm::push_sum:
      return detail::make_push_sum_node(cfg, std::move(initial), backend, stream);
    case algorithm::pairwise:
      return detail::make_pairwise_node(cfg, std::move(initial), backend, stream);
    case algorithm::sync:
      return detail::make_sync_node(cfg, std::move(initial), backend, stream);
    case algorithm::exact:
      return detail::make_exact_node(cfg, std::move(initial), backend, stream);
  }
  MWS_ASSERT(false && "unknown algorithm");
  return nullptr;
}

namespace detail {

node_base::node_base(const config& cfg, model initial, gpu::backend& backend, gpu::stream& stream)
    : cfg_(cfg),
      model_(std::move(initial)),
      backend_(backend),
      stream_(stream),
      rng_(cfg.seed),
      up_(cfg.peers.size(), true) {
  MWS_ASSERT(!cfg_.peers.empty() || cfg_.algo == algorithm::push_sum);
  MWS_ASSERT(cfg_.peers.size() <= max_peers);
  MWS_ASSERT(cfg_.tick_interval_us > 0 && cfg_.timeout_us > 0);
  MWS_ASSERT(std::isfinite(model_.w) && model_.w > 0.0);
  MWS_ASSERT(model_.x.size() == model_.spec.size());
  index_.reserve(cfg_.peers.size());
  for (std::size_t i = 0; i < cfg_.peers.size(); ++i)
    index_.emplace_back(cfg_.peers[i], i);
  std::sort(index_.begin(), index_.end());
  for (std::size_t i = 1; i < index_.size(); ++i) {
    MWS_ASSERT(index_[i - 1].first != index_[i].first && "duplicate peer");
  }
  const bool self_listed = peer_index(cfg_.self).has_value();
  MWS_ASSERT(self_listed == (cfg_.algo == algorithm::exact));
}

std::optional<std::size_t> node_base::peer_index(peer_id p) const noexcept {
  auto it = std::lower_bound(index_.begin(), index_.end(), std::pair{p, std::size_t{0}},
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (it == index_.end() || it->first != p) return std::nullopt;
  return it->second;
}

result<std::size_t> node_base::append_peer(peer_id p) {
  if (p == cfg_.self || peer_index(p)) return errc::not_a_peer;
  if (cfg_.peers.size() >= max_peers) return errc::out_of_range;
  const auto i = cfg_.peers.size();
  cfg_.peers.push_back(p);
  up_.push_back(false);
  const std::pair entry{p, i};
  index_.insert(std::upper_bound(index_.begin(), index_.end(), entry), entry);
  return i;
}

error_code node_base::check_members(std::span<const peer_id> members) const {
  if (members.size() > max_peers) return errc::out_of_range;
  std::vector<peer_id> sorted(members.begin(), members.end());
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return errc::out_of_range;
  for (const auto q : members) {
    if (q != cfg_.self && !peer_index(q)) return errc::not_a_peer;
  }
  if (!std::binary_search(sorted.begin(), sorted.end(), cfg_.self)) return errc::not_a_peer;
  return {};
}

error_code node_base::check_payload(const message& msg, bool positive_weight) const noexcept {
  if (!std::isfinite(msg.header.weight) || (positive_weight && !(msg.header.weight > 0.0))) {
    return errc::bad_weight;
  }
  if (!carries_tensors(msg.header.kind)) {
    return msg.tensors ? error_code(errc::wrong_tensor_count) : error_code{};
  }
  if (!msg.tensors || msg.tensors->size() != model_.spec.size()) return errc::wrong_tensor_count;
  for (std::size_t i = 0; i < model_.spec.size(); ++i) {
    const auto v = (*msg.tensors)[i];
    if (v.type != model_.spec[i].type) return errc::wrong_dtype;
    if (v.numel != model_.spec[i].numel) return errc::wrong_numel;
  }
  return {};
}

error_code node_base::mix(tensor_set& out, std::span<const set_term> terms) {
  MWS_ASSERT(!terms.empty());
  constexpr std::size_t chunk = gpu::backend::max_terms;
  std::array<gpu::weighted_term, chunk> ops;
  for (std::size_t t = 0; t < out.size(); ++t) {
    const gpu::tensor_view dst = out.mutable_view(t);
    std::size_t k = 0;
    bool first = true;
    while (k < terms.size()) {
      std::size_t n = 0;
      if (!first) ops[n++] = {dst, 1.0f};
      while (n < chunk && k < terms.size()) {
        MWS_ASSERT(first || terms[k].x != &out);
        ops[n++] = {(*terms[k].x)[t], terms[k].a};
        ++k;
      }
      if (auto ec = backend_.weighted_sum(stream_, dst, std::span(ops.data(), n))) {
        return errc::backend_failed;
      }
      first = false;
    }
  }
  return {};
}

result<payload_ptr> node_base::snapshot(const tensor_set& src) {
  auto copy = tensor_set::allocate(backend_, model_.spec);
  if (!copy) return errc::backend_failed;
  for (std::size_t t = 0; t < src.size(); ++t) {
    if (backend_.copy(stream_, copy->mutable_view(t), src[t])) return errc::backend_failed;
  }
  return std::make_shared<const tensor_set>(std::move(*copy));
}

result<payload_ptr> node_base::keep(const payload_ptr& p) {
  if (!p->borrowed()) return p;
  return snapshot(*p);
}

error_code node_base::apply_local_update(std::span<const gpu::const_tensor_view> delta,
                                         double weight_delta, time_us /*now_us*/) {
  MWS_ASSERT(delta.size() == model_.x.size());
  // An extra member of exact mode holds w = 0 between handing its mass over and getting its
  // share back, so only a negative total is refused.
  MWS_ASSERT(std::isfinite(weight_delta) && model_.w + weight_delta >= 0.0);
  for (std::size_t t = 0; t < delta.size(); ++t) {
    if (backend_.axpy(stream_, 1.0f, delta[t], model_.x.mutable_view(t))) {
      return errc::backend_failed;
    }
  }
  model_.w += weight_delta;
  ++stats_.local_updates;
  return {};
}

}  // namespace detail
}  // namespace mws::gossip
