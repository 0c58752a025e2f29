// Exact averaging on a one-peer hypercube schedule (Ying et al. 2021), with the extra nodes of a
// non-power-of-two membership folded in before and handed their share after (README.md,
// "exact").
#include <algorithm>
#include <bit>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/node_base.hpp"

namespace mws::gossip::detail {
namespace {

class exact_node final : public node_base {
 public:
  exact_node(const config& cfg, model initial, gpu::backend& b, gpu::stream& s)
      : node_base(cfg, std::move(initial), b, s), members_(cfg_.peers) {
    std::sort(members_.begin(), members_.end());
    n_ = members_.size();
    p_ = std::bit_floor(n_);
    k_ = static_cast<std::uint32_t>(std::countr_zero(p_));
    m_ = n_ - p_;
    MWS_ASSERT(k_ + 1 <= max_exact_step);
    idx_ = static_cast<std::size_t>(std::lower_bound(members_.begin(), members_.end(), cfg_.self) -
                                    members_.begin());
  }

  void start(time_us now_us, action_sink& out) override {
    next_epoch_us_ = std::max(now_us, cfg_.start_us);
    out.arm_timer(next_epoch_us_);
  }

  void on_tick(time_us now_us, action_sink& out) override {
    const bool more = cfg_.exact_epochs == 0 || stats_.round < cfg_.exact_epochs;
    if (!active_ && more && now_us >= next_epoch_us_) {
      active_ = true;
      step_ = 0;
      sent_ = false;
      last_progress_us_ = now_us;
      epoch_start_us_ = now_us;
      advance(now_us, out);
    }
    if (active_ && now_us - last_progress_us_ >= cfg_.timeout_us) request(now_us, out);
    if (active_ || more) {
      const time_us next =
          active_ ? now_us + cfg_.tick_interval_us : std::max(next_epoch_us_, now_us + 1);
      out.arm_timer(next);
    }
  }

  error_code on_message(peer_id from, const message& msg, time_us now_us,
                        action_sink& out) override {
    const auto ec = receive(from, msg, now_us, out);
    if (ec) ++stats_.refused;
    return ec;
  }

  void on_link_up(peer_id peer, time_us, action_sink&) override {
    if (auto i = peer_index(peer)) up_[*i] = true;
  }
  void on_link_down(peer_id peer, time_us, action_sink&) override {
    // The schedule needs every member; a missing partner stalls it (counted in stalls) until
    // the link returns or the driver reconfigures the membership.
    if (auto i = peer_index(peer)) up_[*i] = false;
  }

 private:
  enum class part : std::uint8_t { none, give, fold, exchange, take };

  struct stored {
    round_t epoch = 0;
    std::uint32_t step = 0;
    std::size_t peer = 0;  // member index: sender (inbox) or receiver (history)
    payload_ptr x;
    double w = 0.0;
  };

  std::uint32_t last_step() const noexcept { return k_ + 1; }

  // What member `i` does at `step`, and with whom.
  part part_of(std::size_t i, std::uint32_t step, std::size_t* partner) const noexcept {
    if (step == 0 || step == last_step()) {
      if (m_ == 0) return part::none;
      if (i >= p_) {
        *partner = i - p_;
        return step == 0 ? part::give : part::take;
      }
      if (i < m_) {
        *partner = i + p_;
        return step == 0 ? part::fold : part::give;
      }
      return part::none;
    }
    if (i >= p_) return part::none;
    *partner = i ^ (std::size_t{1} << (step - 1));
    return part::exchange;
  }

  peer_id member(std::size_t i) const noexcept { return members_[i]; }

  error_code receive(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    const auto pi = peer_index(from);
    if (!pi || from == cfg_.self) return errc::not_a_peer;
    if (msg.header.kind != message_kind::exact_value) return errc::wrong_algorithm;
    if (msg.header.step > last_step()) return errc::out_of_range;
    if (auto ec = check_payload(msg, true)) return ec;
    const auto src = static_cast<std::size_t>(
        std::lower_bound(members_.begin(), members_.end(), from) - members_.begin());
    const round_t e = msg.header.round;
    const std::uint32_t t = msg.header.step;
    const bool request = msg.header.seq == 1;
    ++stats_.received;
    if (request) {
      // The sender waits on us: repeat what we sent it in that epoch.
      for (const auto& h : history_) {
        if (h.epoch == e && h.peer == src) {
          ++stats_.resent;
          send_value(out, h, false);
        }
      }
    }
    std::size_t partner = 0;
    const part role = part_of(idx_, t, &partner);
    const bool expected =
        (role == part::fold || role == part::exchange || role == part::take) && partner == src;
    if (!expected) {
      if (request) return {};
      return errc::out_of_range;
    }
    const bool current_or_next = e == epoch_ || e == epoch_ + 1;
    const bool done_here = e == epoch_ && active_ && t < step_;
    const bool buffered = std::any_of(inbox_.begin(), inbox_.end(),
                                      [&](const stored& s) { return s.epoch == e && s.step == t; });
    if (!current_or_next || done_here || buffered) {
      ++stats_.ignored;
      return {};
    }
    auto kept = keep(msg.tensors);
    if (!kept) return kept.error();
    inbox_.push_back({e, t, src, std::move(*kept), msg.header.weight});
    if (active_) advance(now_us, out);
    return {};
  }

  const stored* inbox_find(std::uint32_t t) const noexcept {
    for (const auto& s : inbox_) {
      if (s.epoch == epoch_ && s.step == t) return &s;
    }
    return nullptr;
  }
  void inbox_drop(std::uint32_t t) {
    std::erase_if(inbox_, [&](const stored& s) { return s.epoch == epoch_ && s.step == t; });
  }

  void advance(time_us now_us, action_sink& out) {
    while (active_) {
      std::size_t partner = 0;
      const part role = part_of(idx_, step_, &partner);
      switch (role) {
        case part::none:
          break;
        case part::give:
          give(out, partner);
          break;
        case part::fold:
        case part::take: {
          const auto* in = inbox_find(step_);
          if (!in) return;
          const set_term terms[] = {{&model_.x, 1.0f}, {in->x.get(), 1.0f}};
          check(mix(model_.x, terms));
          model_.w += in->w;
          inbox_drop(step_);
          break;
        }
        case part::exchange: {
          if (!sent_) {
            auto snap = snapshot(model_.x);
            MWS_ASSERT(snap.has_value());
            remember({epoch_, step_, partner, std::move(*snap), model_.w});
            send_value(out, history_.back(), false);
            sent_ = true;
          }
          const auto* in = inbox_find(step_);
          if (!in) return;
          const auto& mine = history_.back();
          MWS_ASSERT(mine.epoch == epoch_ && mine.step == step_);
          // Both partners evaluate the same expression with the lower-numbered member's value
          // first, so both get the same bits: (x - x_sent) is +0 unless a local update arrived
          // in between, and 0.5*lo + 0.5*hi rounds identically on both sides.
          const bool low = idx_ < partner;
          const stored& lo = low ? mine : *in;
          const stored& hi = low ? *in : mine;
          const set_term terms[] = {
              {&model_.x, 1.0f}, {mine.x.get(), -1.0f}, {lo.x.get(), 0.5f}, {hi.x.get(), 0.5f}};
          check(mix(model_.x, terms));
          model_.w = (model_.w - mine.w) + (0.5 * lo.w + 0.5 * hi.w);
          inbox_drop(step_);
          sent_ = false;
          break;
        }
      }
      last_progress_us_ = now_us;
      if (step_ == last_step()) {
        finish_epoch();
      } else {
        ++step_;
        stats_.step = step_;
      }
    }
  }

  // Hands our mass (step 0, an extra member) or half of it (last step, a folding member) to
  // the partner. Both are exact: x - x is 0 and x - x/2 is x/2 in binary floating point.
  void give(action_sink& out, std::size_t partner) {
    auto share = tensor_set::allocate(backend_, model_.spec);
    MWS_ASSERT(share.has_value());
    const float fraction = step_ == 0 ? 1.0f : 0.5f;
    const set_term take[] = {{&model_.x, fraction}};
    check(mix(*share, take));
    const double w_share = step_ == 0 ? model_.w : 0.5 * model_.w;
    const set_term keep_rest[] = {{&model_.x, 1.0f}, {&*share, -1.0f}};
    check(mix(model_.x, keep_rest));
    model_.w -= w_share;
    remember(
        {epoch_, step_, partner, std::make_shared<const tensor_set>(std::move(*share)), w_share});
    send_value(out, history_.back(), false);
  }

  void finish_epoch() {
    ++stats_.round;
    stats_.step = 0;
    active_ = false;
    ++epoch_;
    step_ = 0;
    next_epoch_us_ = epoch_start_us_ + cfg_.epoch_interval_us;
    std::erase_if(history_, [&](const stored& s) { return s.epoch + 1 < epoch_; });
    std::erase_if(inbox_, [&](const stored& s) { return s.epoch < epoch_; });
  }

  // Stalled on a partner: send it a flagged message so that it repeats what it sent us.
  void request(time_us now_us, action_sink& out) {
    ++stats_.stalls;
    last_progress_us_ = now_us;
    std::size_t partner = 0;
    const part role = part_of(idx_, step_, &partner);
    if (role == part::none || role == part::give) return;
    const stored* latest = nullptr;
    for (const auto& h : history_) {
      if (h.epoch == epoch_ && h.peer == partner) latest = &h;
    }
    ++stats_.resent;
    if (latest) {
      send_value(out, *latest, true);
      return;
    }
    // Nothing sent to this partner yet in this epoch (a folding member waits on its extra
    // member): any value tagged with the step serves as the request; the partner ignores it.
    auto snap = snapshot(model_.x);
    MWS_ASSERT(snap.has_value());
    send_value(out, stored{epoch_, step_, partner, std::move(*snap), model_.w}, true);
  }

  void remember(stored s) { history_.push_back(std::move(s)); }

  void send_value(action_sink& out, const stored& s, bool request) {
    message msg;
    msg.header.kind = message_kind::exact_value;
    msg.header.round = s.epoch;
    msg.header.step = s.step;
    msg.header.seq = request ? 1 : 0;
    msg.header.weight = s.w;
    msg.tensors = s.x;
    send(out, member(s.peer), std::move(msg));
  }

  static void check(error_code ec) { MWS_ASSERT(!ec && "mixing own buffers cannot fail"); }

  std::vector<peer_id> members_;  // sorted; a member's index numbers it in the schedule
  std::size_t n_ = 0, p_ = 0, m_ = 0, idx_ = 0;
  std::uint32_t k_ = 0;
  bool active_ = false;
  bool sent_ = false;
  round_t epoch_ = 0;       // the epoch running, or the next one to run
  std::uint32_t step_ = 0;  // 0 .. k + 1
  time_us epoch_start_us_ = 0;
  time_us next_epoch_us_ = 0;
  time_us last_progress_us_ = 0;
  std::vector<stored> inbox_;    // partners' values of the current and the next epoch
  std::vector<stored> history_;  // what we sent in this and the previous epoch
};

}  // namespace

std::unique_ptr<averaging_node> make_exact_node(const config& cfg, model m, gpu::backend& b,
                                                gpu::stream& s) {
  return std::make_unique<exact_node>(cfg, std::move(m), b, s);
}

}  // namespace mws::gossip::detail
