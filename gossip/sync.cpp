// Synchronous rounds (D-PSGD, Lian et al. 2017) with Metropolis-Hastings weights and a
// stale-synchronous bound s (README.md, "sync").
#include <algorithm>
#include <deque>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/node_base.hpp"

namespace mws::gossip::detail {
namespace {

struct round_value {
  round_t round = 0;
  payload_ptr x;
  double w = 0.0;
};

class sync_node final : public node_base {
 public:
  sync_node(const config& cfg, model initial, gpu::backend& b, gpu::stream& s)
      : node_base(cfg, std::move(initial), b, s), nbrs_(cfg_.peers.size()) {
    terms_.reserve(cfg_.peers.size() + 2);
  }

  void start(time_us now_us, action_sink& out) override {
    started_ = true;
    last_progress_us_ = now_us;
    auto snap = snapshot(model_.x);
    MWS_ASSERT(snap.has_value());
    history_.push_back({0, std::move(*snap), model_.w});
    for (std::size_t j = 0; j < nbrs_.size(); ++j) {
      if (up_[j]) send_value(out, j, history_.back(), false);
    }
    next_tick_us_ = std::max(now_us, cfg_.start_us) + cfg_.tick_interval_us;
    out.arm_timer(next_tick_us_);
  }

  void on_tick(time_us now_us, action_sink& out) override {
    if (now_us < next_tick_us_) return;
    next_tick_us_ = std::max(next_tick_us_ + cfg_.tick_interval_us, now_us + 1);
    out.arm_timer(next_tick_us_);
    if (!started_ || now_us - last_progress_us_ < cfg_.timeout_us) return;
    if (cfg_.sync_rounds != 0 && round() >= cfg_.sync_rounds) return;
    // Stalled: re-send our current value to every neighbour we still wait for, flagged so that
    // the neighbour answers with its own value of our round (its earlier one may be lost).
    ++stats_.stalls;
    for (std::size_t j = 0; j < nbrs_.size(); ++j) {
      if (up_[j] && !usable(j)) {
        ++stats_.resent;
        send_value(out, j, history_.back(), true);
      }
    }
  }

  error_code on_message(peer_id from, const message& msg, time_us now_us,
                        action_sink& out) override {
    const auto ec = receive(from, msg, now_us, out);
    if (ec) ++stats_.refused;
    return ec;
  }

  void on_link_up(peer_id peer, time_us, action_sink& out) override {
    const auto j = peer_index(peer);
    if (!j || up_[*j]) return;
    up_[*j] = true;
    nbrs_[*j].rejoined = true;
    if (started_) send_value(out, *j, history_.back(), true);
  }

  void on_link_down(peer_id peer, time_us now_us, action_sink& out) override {
    const auto j = peer_index(peer);
    if (!j || !up_[*j]) return;
    up_[*j] = false;
    if (started_) advance(now_us, out);
  }

 private:
  struct neighbour {
    std::uint32_t degree = 0;        // 0 until its first value arrives
    std::deque<round_value> values;  // by increasing round
    bool rejoined = false;           // its link came back up and we have not caught up with it yet
  };

  round_t round() const noexcept { return stats_.round; }

  // The freshest value of neighbour j not newer than our round, if within the staleness bound.
  // After a link comes back up the neighbour may be far ahead, no longer keeping the rounds we
  // are at (it ran on while we were cut off); until we are back within the bound, its oldest
  // value ahead of us stands in, so that we catch up while it waits for us.
  const round_value* usable_value(std::size_t j) const noexcept {
    const auto& vs = nbrs_[j].values;
    const round_value* best = nullptr;
    for (const auto& v : vs) {
      if (v.round <= round()) best = &v;
    }
    if (best && best->round + cfg_.staleness >= round()) return best;
    if (nbrs_[j].rejoined) {
      for (const auto& v : vs) {
        if (v.round > round()) return &v;
      }
    }
    return nullptr;
  }
  bool usable(std::size_t j) const noexcept { return usable_value(j) != nullptr; }

  error_code receive(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    const auto j = peer_index(from);
    if (!j) return errc::not_a_peer;
    if (msg.header.kind != message_kind::sync_value) return errc::wrong_algorithm;
    if (msg.header.degree == 0 || msg.header.degree > max_peers) return errc::out_of_range;
    if (auto ec = check_payload(msg, true)) return ec;
    ++stats_.received;
    auto& n = nbrs_[*j];
    n.degree = msg.header.degree;
    const round_t q = msg.header.round;
    if (msg.header.step == 1 && started_) {
      // The neighbour is stalled in round q and asks for our value of that round (or the
      // closest we still have).
      const round_value* answer = &history_.front();
      for (const auto& h : history_) {
        if (h.round <= q) answer = &h;
      }
      ++stats_.resent;
      send_value(out, *j, *answer, false);
    }
    const bool known = std::any_of(n.values.begin(), n.values.end(),
                                   [q](const round_value& v) { return v.round == q; });
    // Older than anything we can still use: drop.
    const bool too_old = q + cfg_.staleness + 1 < round();
    if (known || too_old) {
      ++stats_.ignored;
      return {};
    }
    auto kept = keep(msg.tensors);
    if (!kept) return kept.error();
    // Further ahead than the bound allows (only after a healed partition): keep just the
    // newest such value, so that what a neighbour can make us store stays bounded.
    const round_t far = round() + cfg_.staleness + 2;
    if (q > far) {
      while (!n.values.empty() && n.values.back().round > far)
        n.values.pop_back();
    }
    auto at = std::find_if(n.values.begin(), n.values.end(),
                           [q](const round_value& v) { return v.round > q; });
    n.values.insert(at, round_value{q, std::move(*kept), msg.header.weight});
    if (started_) advance(now_us, out);
    return {};
  }

  void advance(time_us now_us, action_sink& out) {
    for (;;) {
      if (cfg_.sync_rounds != 0 && round() >= cfg_.sync_rounds) return;
      // Every live neighbour must have a usable value.
      std::uint32_t degree = 0;
      for (std::size_t j = 0; j < nbrs_.size(); ++j) {
        if (!up_[j]) continue;
        if (!usable(j)) return;
        ++degree;
      }
      if (degree == 0) return;  // cut off from every neighbour: no rounds alone
      mix_round();
      last_progress_us_ = now_us;
      auto snap = snapshot(model_.x);
      MWS_ASSERT(snap.has_value());
      history_.push_back({round(), std::move(*snap), model_.w});
      while (history_.size() > cfg_.staleness + 2)
        history_.pop_front();
      for (std::size_t j = 0; j < nbrs_.size(); ++j) {
        if (up_[j]) send_value(out, j, history_.back(), false);
      }
    }
  }

  // x += sum_j W_ij (x_j^{r'} - x_i^r) over live neighbours: the diffusion form, which keeps
  // local updates made since round r and, for s = 0, conserves the mesh's mass exactly.
  void mix_round() {
    const auto& own = history_.back();
    MWS_ASSERT(own.round == round());
    const auto d_i = static_cast<std::uint32_t>(cfg_.peers.size());
    terms_.clear();
    terms_.push_back({&model_.x, 1.0f});
    terms_.push_back({own.x.get(), 0.0f});  // coefficient filled in below
    float self_out = 0.0f;
    double w_delta = 0.0;
    std::uint32_t staleness = 0;
    for (std::size_t j = 0; j < nbrs_.size(); ++j) {
      if (!up_[j]) continue;
      const auto* v = usable_value(j);
      if (v->round <= round()) nbrs_[j].rejoined = false;  // back within the bound
      const double w_ij = metropolis_hastings_weight(d_i, nbrs_[j].degree);
      const auto a = static_cast<float>(w_ij);
      terms_.push_back({v->x.get(), a});
      self_out += a;
      w_delta += w_ij * (v->w - own.w);
      if (v->round <= round()) {
        staleness = std::max(staleness, static_cast<std::uint32_t>(round() - v->round));
      }
    }
    terms_[1].a = -self_out;
    const auto ec = mix(model_.x, terms_);
    MWS_ASSERT(!ec && "mixing the node's own buffers cannot fail");
    model_.w += w_delta;
    stats_.max_staleness_used = std::max(stats_.max_staleness_used, staleness);
    ++stats_.round;
    // Values older than the freshest one now usable will never be used again.
    for (auto& n : nbrs_) {
      while (n.values.size() > 1 && n.values[1].round <= round())
        n.values.pop_front();
    }
  }

  void send_value(action_sink& out, std::size_t j, const round_value& v, bool request) {
    message msg;
    msg.header.kind = message_kind::sync_value;
    msg.header.round = v.round;
    msg.header.step = request ? 1 : 0;
    msg.header.degree = static_cast<std::uint32_t>(cfg_.peers.size());
    msg.header.weight = v.w;
    msg.tensors = v.x;
    send(out, cfg_.peers[j], std::move(msg));
  }

  std::vector<neighbour> nbrs_;
  std::deque<round_value> history_;  // our values of the last s + 2 rounds, by round
  std::vector<set_term> terms_;
  bool started_ = false;
  time_us last_progress_us_ = 0;
  time_us next_tick_us_ = 0;
};

}  // namespace

std::unique_ptr<averaging_node> make_sync_node(const config& cfg, model m, gpu::backend& b,
                                               gpu::stream& s) {
  return std::make_unique<sync_node>(cfg, std::move(m), b, s);
}

}  // namespace mws::gossip::detail
