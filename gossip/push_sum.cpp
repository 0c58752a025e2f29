// Push-sum (Kempe et al. 2003) with running sums per directed link (Hadjicostis,
// Dominguez-Garcia, Charalambous 2016), or plain push-sum for comparison.
#include <algorithm>
#include <cmath>
#include <optional>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/node_base.hpp"

namespace mws::gossip::detail {
namespace {

class push_sum_node final : public node_base {
 public:
  push_sum_node(const config& cfg, model initial, gpu::backend& b, gpu::stream& s)
      : node_base(cfg, std::move(initial), b, s),
        out_(cfg_.peers.size()),
        in_(cfg_.peers.size()),
        order_(cfg_.peers.size()) {
    MWS_ASSERT(cfg_.fanout >= 1);
  }

  error_code add_peer(peer_id peer) override {
    auto i = append_peer(peer);
    if (!i) return i.error();
    out_.emplace_back();
    in_.emplace_back();
    order_.emplace_back();
    return {};
  }

  error_code reset_peer(peer_id peer) override {
    const auto i = peer_index(peer);
    if (!i) return errc::not_a_peer;
    const auto ec = open_ && open_->peer == *i ? abort_share() : error_code{};
    out_[*i] = {};
    in_[*i] = {};
    return ec;
  }

  void start(time_us now_us, action_sink& out) override {
    next_tick_us_ = std::max(now_us, cfg_.start_us);
    out.arm_timer(next_tick_us_);
  }

  void on_tick(time_us now_us, action_sink& out) override {
    if (now_us < next_tick_us_) return;
    share(now_us, out);
    // A late tick does not trigger a burst of catch-up shares.
    next_tick_us_ = std::max(next_tick_us_ + cfg_.tick_interval_us, now_us + 1);
    out.arm_timer(next_tick_us_);
  }

  error_code on_message(peer_id from, const message& msg, time_us /*now_us*/,
                        action_sink& out) override {
    const auto ec = receive(from, msg, out);
    if (ec) ++stats_.refused;
    return ec;
  }

  void on_link_up(peer_id peer, time_us, action_sink&) override {
    if (auto i = peer_index(peer)) up_[*i] = true;
  }
  void on_link_down(peer_id peer, time_us, action_sink&) override {
    if (auto i = peer_index(peer)) {
      up_[*i] = false;
      if (cfg_.hold_unacked) abandon_held(*i);
    }
  }

 private:
  struct out_link {
    payload_ptr sigma;  // running sum of x sent on this link, in the current frame; null = zero
    double sigma_w = 0.0;
    std::uint64_t seq = 0;
    std::uint64_t base = 0;     // frame: the seq our running sum is relative to
    time_us sent_us = 0;        // when the last running sum went out
    std::uint32_t resends = 0;  // hold mode: re-sends of the held running sum
  };
  struct in_link {
    payload_ptr rho;  // the last running sum applied from this link, in its frame; null = zero
    double rho_w = 0.0;
    std::uint64_t seq = 0;
    std::uint64_t base = 0;
  };

  void send_ack(action_sink& out, std::size_t i) {
    message ack;
    ack.header.kind = message_kind::push_sum_ack;
    ack.header.seq = in_[i].seq;
    ack.header.round = in_[i].base;
    send(out, cfg_.peers[i], std::move(ack));
  }

  error_code receive(peer_id from, const message& msg, action_sink& out) {
    const auto i = peer_index(from);
    if (!i) return errc::not_a_peer;
    const auto kind = msg.header.kind;
    const auto expected =
        cfg_.running_sums ? message_kind::push_sum_running : message_kind::push_sum_plain;
    if (kind == message_kind::push_sum_ack && cfg_.running_sums) {
      if (auto ec = check_payload(msg, false)) return ec;
      ++stats_.received;
      rebase_out(*i, msg.header.seq);
      return {};
    }
    if (kind != expected) return errc::wrong_algorithm;
    if (auto ec = check_payload(msg, true)) return ec;
    if (!cfg_.running_sums) {
      const set_term terms[] = {{msg.tensors.get(), 1.0f}, {&model_.x, 1.0f}};
      if (auto ec = mix(model_.x, terms)) return ec;
      model_.w += msg.header.weight;
      ++stats_.received;
      return {};
    }
    auto fresh = admit(*i, msg.header, out);
    if (!fresh || !*fresh) return fresh ? error_code{} : fresh.error();
    const auto& link = in_[*i];
    auto kept = cfg_.hold_unacked ? result<payload_ptr>(payload_ptr{}) : keep(msg.tensors);
    if (!kept) return kept.error();
    // x += sigma - rho, the difference first: consecutive running sums are close, so it is
    // exact (Sterbenz) and x is rounded once.
    if (link.rho) {
      const set_term terms[] = {
          {msg.tensors.get(), 1.0f}, {link.rho.get(), -1.0f}, {&model_.x, 1.0f}};
      if (auto ec = mix(model_.x, terms)) return ec;
    } else {
      const set_term terms[] = {{msg.tensors.get(), 1.0f}, {&model_.x, 1.0f}};
      if (auto ec = mix(model_.x, terms)) return ec;
    }
    applied(*i, msg.header, std::move(*kept));
    send_ack(out, *i);
    return {};
  }

  // Whether running sum `h` from peer i brings anything new (false: older than, or a repeat
  // of, the last one applied; a repeat is acked again), after taking in its ack and its frame.
  result<bool> admit(std::size_t i, const message_header& h, action_sink& out) {
    auto& link = in_[i];
    if (h.ack != 0) rebase_out(i, h.ack);
    if (open_ && open_->peer == i) {
      if (h.seq > open_->header.seq) return errc::out_of_turn;  // the sender resends it later
      ++stats_.ignored;                                         // a copy of the open one
      return false;
    }
    if (h.seq <= link.seq) {  // older than what was applied: nothing new in it
      ++stats_.ignored;
      // A repeat of the last one: our ack may have been lost.
      if (h.seq == link.seq && h.round == link.base) send_ack(out, i);
      return false;
    }
    if (h.round != link.base) {
      if (h.round < link.base) return errc::out_of_range;
      if (auto ec = rebase_in(link, h.round)) return {boost::system::in_place_error, ec};
    } else if (cfg_.hold_unacked && link.seq != link.base) {
      return errc::out_of_range;  // a holding sender starts a new frame for every running sum
    }
    return true;
  }

  // Running sum `h` from peer i is in x: its weight joins w, and it is the one to compare the
  // next with.
  void applied(std::size_t i, const message_header& h, payload_ptr rho) {
    auto& link = in_[i];
    model_.w += h.weight - link.rho_w;
    link.rho = std::move(rho);
    link.rho_w = h.weight;
    link.seq = h.seq;
    ++stats_.received;
  }

  // --- Streamed receipt (hold mode): averaging_node::begin_share and what follows ---

  result<bool> begin_share(peer_id from, const message_header& h, time_us,
                           action_sink& out) override {
    auto opened = open_share(from, h, out);
    if (!opened) ++stats_.refused;
    return opened;
  }

  result<bool> open_share(peer_id from, const message_header& h, action_sink& out) {
    if (!cfg_.running_sums || !cfg_.hold_unacked) return errc::not_supported;
    if (open_) return errc::out_of_turn;
    const auto i = peer_index(from);
    if (!i) return errc::not_a_peer;
    if (h.kind != message_kind::push_sum_running) return errc::wrong_algorithm;
    // A cut completes the rest by (w + weight) / w in f32: that must be finite.
    if (!std::isfinite(h.weight) || !(h.weight > 0.0) ||
        !std::isfinite(static_cast<float>((model_.w + h.weight) / model_.w))) {
      return errc::bad_weight;
    }
    auto fresh = admit(*i, h, out);
    if (!fresh || !*fresh) return fresh;
    open_ = streamed{*i, h, {h.weight, 0, 0}};
    skip_empty_tensors();
    return true;
  }

  error_code share_part(gpu::const_tensor_view part) override {
    if (!open_ || open_->at.tensor == model_.x.size()) return errc::out_of_turn;
    auto& at = open_->at;
    const auto x = model_.x.mutable_view(at.tensor);
    if (part.type != x.type) return errc::wrong_dtype;
    if (part.numel == 0 || part.numel > x.numel - at.element) return errc::wrong_numel;
    // The same operation, in the same order, as a whole running sum's: the same bits.
    const auto dst = x.slice(at.element, part.numel);
    const gpu::weighted_term terms[] = {{part, 1.0f}, {dst, 1.0f}};
    if (backend_.weighted_sum(stream_, dst, terms)) return errc::backend_failed;
    at.element += part.numel;
    skip_empty_tensors();
    return {};
  }

  error_code end_share(time_us, action_sink& out) override {
    if (!open_ || open_->at.tensor != model_.x.size()) return errc::out_of_turn;
    const auto i = open_->peer;
    applied(i, open_->header, {});
    open_.reset();
    send_ack(out, i);
    return {};
  }

  error_code abort_share() override {
    if (!open_) return errc::out_of_turn;
    // The elements still to come get this node's own estimate's worth of the share's weight:
    // x * (w + share) / w keeps their estimate, and w + share is then everybody's weight.
    const auto grow = static_cast<float>((model_.w + open_->at.weight) / model_.w);
    const auto ec = for_each_range(model_.x, false, [&](gpu::tensor_view v) {
      return backend_.scale(stream_, grow, v) ? error_code(errc::backend_failed) : error_code{};
    });
    applied(open_->peer, open_->header, {});
    open_.reset();
    ++stats_.shares_cut;
    return ec;
  }

  share_progress receiving() const noexcept override {
    return open_ ? open_->at : share_progress{};
  }

  void skip_empty_tensors() {
    auto& at = open_->at;
    while (at.tensor < model_.x.size() && at.element == model_.x[at.tensor].numel) {
      ++at.tensor;
      at.element = 0;
    }
  }

  // Calls fn on the parts of `set` (x, or a set of the same manifest) where the open share has
  // mixed into x (`mixed`), or on the rest.
  template <class F>
  error_code for_each_range(tensor_set& set, bool mixed, F&& fn) {
    const auto& at = open_->at;
    for (std::size_t t = 0; t < set.size(); ++t) {
      const auto x = set.mutable_view(t);
      const std::size_t split = t < at.tensor ? x.numel : t == at.tensor ? at.element : 0;
      const auto first = mixed ? 0 : split;
      const auto count = mixed ? split : x.numel - split;
      if (count == 0) continue;
      if (auto ec = fn(x.slice(first, count))) return ec;
    }
    return {};
  }

  // The receiver of out-link j acks our running sum `ack`. If that is the last one we sent, it
  // has applied everything we ever sent on this link, so both sides can restart the running sum
  // from zero (a new frame, named by `ack`) with no arithmetic and hence no rounding. This keeps
  // running sums as small as a few shares instead of growing without bound, which would cost
  // f32 precision. Acks of earlier sends are ignored: rebasing on them would need subtractions
  // whose roundings the two sides could not match.
  void rebase_out(std::size_t j, std::uint64_t ack) {
    auto& link = out_[j];
    if (ack != link.seq || ack == link.base) return;
    link.sigma.reset();
    link.sigma_w = 0.0;
    link.base = ack;
    link.resends = 0;
  }

  // The sender restarted its running sum after our ack of `base`, which is the last running sum
  // we applied (nothing newer existed when it restarted): ours restarts from zero too.
  error_code rebase_in(in_link& link, std::uint64_t base) {
    // A holding sender may also start a frame after a running sum we never got: it gave that
    // one up (abandon_held), and with no rho to keep consistent, we can follow.
    if (base != link.seq && !(cfg_.hold_unacked && base > link.seq)) return errc::out_of_range;
    link.rho.reset();
    link.rho_w = 0.0;
    link.base = base;
    return {};
  }

  // Hold mode: a running sum still unacked after timeout_us goes out again, unchanged (its ack
  // or the sum itself was lost); after config::held_resends_max re-sends it is given up.
  void resend_unacked(time_us now_us, action_sink& out) {
    for (std::size_t j = 0; j < out_.size(); ++j) {
      auto& link = out_[j];
      if (!up_[j] || !link.sigma || now_us - link.sent_us < cfg_.timeout_us) continue;
      if (cfg_.held_resends_max != 0 && link.resends >= cfg_.held_resends_max) {
        abandon_held(j);
        continue;
      }
      link.sent_us = now_us;
      ++link.resends;
      ++stats_.resent;
      send(out, cfg_.peers[j], running_sum_message(j));
    }
  }

  // Hold mode: forget the running sum held for link j (its peer failed, or never acks) and start
  // the link's next frame after it. Its mass is lost unless the receiver applies it after all;
  // it is never applied twice (the receiver refuses a running sum of a frame it has left). This
  // bounds what a node holds for peers that fail: nothing.
  void abandon_held(std::size_t j) {
    auto& link = out_[j];
    if (!link.sigma) return;
    link.sigma.reset();
    link.sigma_w = 0.0;
    link.base = link.seq;
    link.resends = 0;
    ++stats_.held_abandoned;
  }

  message running_sum_message(std::size_t j) const {
    const auto& link = out_[j];
    message msg;
    msg.header.kind = message_kind::push_sum_running;
    msg.header.seq = link.seq;
    msg.header.round = link.base;
    msg.header.weight = link.sigma_w;
    msg.header.ack = ack_for(j);
    msg.tensors = link.sigma;
    return msg;
  }

  void share(time_us now_us, action_sink& out) {
    if (cfg_.hold_unacked) resend_unacked(now_us, out);
    // Choose `fanout` distinct live neighbours at random, preferring links whose receiver has
    // acked our last running sum (so the next one starts from zero and stays small: README.md,
    // precision). A link still waiting for its ack is chosen only when too few others are
    // ready, or once timeout_us has passed since its last send (its ack was probably lost; the
    // new send repairs that), so no link starves.
    std::size_t ready = 0, live = 0, held = 0;
    for (std::size_t i = 0; i < up_.size(); ++i) {
      if (!up_[i]) continue;  // a running sum held for a lost peer blocks nothing
      if (out_[i].sigma) ++held;
      const auto& link = out_[i];
      const bool acked = !cfg_.running_sums || !link.sigma ||
                         (!cfg_.hold_unacked && now_us - link.sent_us >= cfg_.timeout_us);
      order_[live++] = i;
      if (acked) std::swap(order_[ready++], order_[live - 1]);
    }
    if (cfg_.hold_unacked) {
      live = ready;  // a held running sum takes no more shares
      if (cfg_.held_max != 0)
        live = held >= cfg_.held_max ? 0 : std::min(live, cfg_.held_max - held);
    }
    const std::size_t targets = std::min<std::size_t>(cfg_.fanout, live);
    for (std::size_t k = 0; k < targets; ++k) {
      // Draw from the ready links while there are any left, then from the rest.
      const std::size_t lo = k, hi = k < ready ? ready : live;
      const auto r = lo + static_cast<std::size_t>(rng_.below(hi - lo));
      std::swap(order_[k], order_[r]);
    }
    for (std::size_t k = 0; k < targets; ++k) {
      // Share k of f takes 1/(f+1-k) of what is left, so every target and the node itself end
      // up with 1/(f+1) of the value at the start of the tick.
      const double part = 1.0 / static_cast<double>(cfg_.fanout + 1 - k);
      const auto j = order_[k];
      auto ec =
          cfg_.running_sums ? send_running_sum(now_us, out, j, part) : send_plain(out, j, part);
      MWS_ASSERT(!ec && "mixing with the node's own buffers cannot fail");
    }
  }

  error_code send_running_sum(time_us now_us, action_sink& out, std::size_t j, double part) {
    auto& link = out_[j];
    auto next = tensor_set::allocate(backend_, model_.spec);
    if (!next) return errc::backend_failed;
    const auto a = static_cast<float>(part);
    MWS_ASSERT(!open_ || !link.sigma);  // a holding node sends only on acked links
    if (link.sigma) {
      const set_term grow[] = {{link.sigma.get(), 1.0f}, {&model_.x, a}};
      if (auto ec = mix(*next, grow)) return ec;
      // x -= (sigma_new - sigma_old): remove exactly what the rounded running sum gained, so
      // no mass is made or lost by the rounding of sigma.
      const set_term take[] = {{&*next, -1.0f}, {link.sigma.get(), 1.0f}, {&model_.x, 1.0f}};
      if (auto ec = mix(model_.x, take)) return ec;
    } else {
      const set_term grow[] = {{&model_.x, a}};
      if (auto ec = mix(*next, grow)) return ec;
      if (open_) {
        // A share being received weighs the part of x it has mixed into by w + its weight:
        // from there the running sum takes part * w too, a smaller fraction.
        if (auto ec = shrink_received(*next)) return ec;
        const set_term take[] = {{&*next, -1.0f}, {&model_.x, 1.0f}};
        if (auto ec = mix(model_.x, take)) return ec;
      } else if (part == 0.5) {
        // x - x/2 is x/2 exactly (Sterbenz): one pass less than the subtraction below.
        for (std::size_t t = 0; t < model_.x.size(); ++t) {
          if (backend_.scale(stream_, 0.5f, model_.x.mutable_view(t))) return errc::backend_failed;
        }
      } else {
        const set_term take[] = {{&*next, -1.0f}, {&model_.x, 1.0f}};
        if (auto ec = mix(model_.x, take)) return ec;
      }
    }
    const double w_share = model_.w * part;
    const double sigma_w = link.sigma_w + w_share;
    model_.w -= sigma_w - link.sigma_w;
    link.sigma_w = sigma_w;
    link.sigma = std::make_shared<const tensor_set>(std::move(*next));
    link.sent_us = now_us;
    ++link.seq;
    send(out, cfg_.peers[j], running_sum_message(j));
    return {};
  }

  // The seq of the running sum last applied from j (0: none yet, or nothing new in this frame).
  std::uint64_t ack_for(std::size_t j) const noexcept {
    const auto& link = in_[j];
    return link.seq == link.base ? 0 : link.seq;
  }

  error_code send_plain(action_sink& out, std::size_t j, double part) {
    auto share = tensor_set::allocate(backend_, model_.spec);
    if (!share) return errc::backend_failed;
    const set_term grow[] = {{&model_.x, static_cast<float>(part)}};
    if (auto ec = mix(*share, grow)) return ec;
    const set_term take[] = {{&*share, -1.0f}, {&model_.x, 1.0f}};
    if (auto ec = mix(model_.x, take)) return ec;
    const double w_share = model_.w * part;
    model_.w -= w_share;
    message msg;
    msg.header.kind = message_kind::push_sum_plain;
    msg.header.seq = ++out_[j].seq;
    msg.header.weight = w_share;
    msg.tensors = std::make_shared<const tensor_set>(std::move(*share));
    send(out, cfg_.peers[j], std::move(msg));
    return {};
  }

  // next = part * x: scales its elements that an open share has mixed into x by
  // w / (w + share weight).
  error_code shrink_received(tensor_set& next) {
    const auto shrink = static_cast<float>(model_.w / (model_.w + open_->at.weight));
    return for_each_range(next, true, [&](gpu::tensor_view v) {
      return backend_.scale(stream_, shrink, v) ? error_code(errc::backend_failed) : error_code{};
    });
  }

  struct streamed {
    std::size_t peer = 0;
    message_header header;
    share_progress at;
  };

  std::vector<out_link> out_;
  std::vector<in_link> in_;
  std::optional<streamed> open_;
  std::vector<std::size_t> order_;
  time_us next_tick_us_ = 0;
};

}  // namespace

std::unique_ptr<averaging_node> make_push_sum_node(const config& cfg, model m, gpu::backend& b,
                                                   gpu::stream& s) {
  return std::make_unique<push_sum_node>(cfg, std::move(m), b, s);
}

}  // namespace mws::gossip::detail
