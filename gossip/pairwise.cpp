// Randomized pairwise gossip (Boyd, Ghosh, Prabhakar, Shah 2006) made safe under message loss:
// propose / accept / commit with the responder driving retransmission (README.md, "pairwise").
#include <algorithm>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/node_base.hpp"

namespace mws::gossip::detail {
namespace {

class pairwise_node final : public node_base {
 public:
  pairwise_node(const config& cfg, model initial, gpu::backend& b, gpu::stream& s)
      : node_base(cfg, std::move(initial), b, s),
        committed_(cfg_.peers.size(), 0),
        seen_(cfg_.peers.size(), 0),
        live_(cfg_.peers.size()) {}

  void start(time_us now_us, action_sink& out) override {
    next_tick_us_ = std::max(now_us, cfg_.start_us);
    out.arm_timer(next_tick_us_);
  }

  void on_tick(time_us now_us, action_sink& out) override {
    if (role_ == role::proposing && now_us >= deadline_us_) {
      // No answer in time: abort. Nothing was applied here; the abort tells a responder that
      // did accept (its accept lost) to unlock without applying.
      ++stats_.exchanges_timed_out;
      send_control(out, peer_, message_kind::pairwise_abort, exchange_);
      role_ = role::idle;
    }
    if (role_ == role::locked && now_us >= deadline_us_) {
      // Still no commit or abort: the accept or the answer was lost. Ask again.
      ++stats_.resent;
      send_accept(out);
      deadline_us_ = now_us + cfg_.timeout_us;
      out.arm_timer(deadline_us_);
    }
    if (now_us >= next_tick_us_) {
      if (role_ == role::idle) propose(now_us, out);
      next_tick_us_ = std::max(next_tick_us_ + cfg_.tick_interval_us, now_us + 1);
      out.arm_timer(next_tick_us_);
    }
  }

  error_code on_message(peer_id from, const message& msg, time_us now_us,
                        action_sink& out) override {
    const auto ec = receive(from, msg, now_us, out);
    if (ec) ++stats_.refused;
    stats_.locked = role_ == role::locked ? 1 : 0;
    return ec;
  }

  void on_link_up(peer_id peer, time_us, action_sink&) override {
    if (auto i = peer_index(peer)) up_[*i] = true;
  }

  void on_link_down(peer_id peer, time_us, action_sink&) override {
    const auto i = peer_index(peer);
    if (!i) return;
    up_[*i] = false;
    if (role_ == role::proposing && peer_ == *i) {
      ++stats_.exchanges_timed_out;
      role_ = role::idle;
    } else if (role_ == role::locked && peer_ == *i) {
      // The proposer may or may not have applied; nobody can tell us any more. Unlock and
      // count it: this is the one case where half a difference may be lost.
      ++stats_.exchanges_abandoned;
      role_ = role::idle;
      theirs_.reset();
      mine_.reset();
    }
    stats_.locked = role_ == role::locked ? 1 : 0;
  }

 private:
  enum class role : std::uint8_t { idle, proposing, locked };

  error_code receive(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    const auto i = peer_index(from);
    if (!i) return errc::not_a_peer;
    const auto kind = msg.header.kind;
    if (kind < message_kind::pairwise_propose || kind > message_kind::pairwise_abort) {
      return errc::wrong_algorithm;
    }
    if (auto ec = check_payload(msg, carries_tensors(kind))) return ec;
    const auto e = msg.header.seq;
    const bool current = role_ != role::idle && peer_ == *i && exchange_ == e;
    ++stats_.received;
    switch (kind) {
      case message_kind::pairwise_propose:
        if (role_ == role::locked && current) {  // our accept was lost or is late
          ++stats_.resent;
          send_accept(out);
          return {};
        }
        if (e <= seen_[*i]) {  // a delayed or duplicated proposal we already handled
          ++stats_.ignored;
          return {};
        }
        if (role_ != role::idle) {
          send_control(out, *i, message_kind::pairwise_reject, e);
          return {};
        }
        seen_[*i] = e;
        return lock(*i, e, msg, now_us, out);
      case message_kind::pairwise_accept:
        if (role_ == role::proposing && current) return commit_as_proposer(msg, out);
        // A retransmitted or late accept: tell the responder what became of it.
        send_control(
            out, *i,
            committed_[*i] == e ? message_kind::pairwise_commit : message_kind::pairwise_abort, e);
        return {};
      case message_kind::pairwise_reject:
        if (role_ == role::proposing && current) {
          ++stats_.exchanges_rejected;
          role_ = role::idle;
          mine_.reset();
        } else {
          ++stats_.ignored;
        }
        return {};
      case message_kind::pairwise_commit:
        if (role_ == role::locked && current) return commit_as_responder();
        ++stats_.ignored;
        return {};
      case message_kind::pairwise_abort:
        if (role_ == role::locked && current) {
          role_ = role::idle;
          theirs_.reset();
          mine_.reset();
        } else {
          ++stats_.ignored;
        }
        return {};
      default:
        return errc::wrong_algorithm;
    }
  }

  void propose(time_us now_us, action_sink& out) {
    std::size_t live = 0;
    for (std::size_t i = 0; i < up_.size(); ++i) {
      if (up_[i]) live_[live++] = i;
    }
    if (live == 0) return;
    const auto j = live_[static_cast<std::size_t>(rng_.below(live))];
    auto snap = snapshot(model_.x);
    MWS_ASSERT(snap.has_value());
    mine_ = std::move(*snap);
    mine_w_ = model_.w;
    role_ = role::proposing;
    peer_ = j;
    exchange_ = ++next_exchange_;
    deadline_us_ = now_us + cfg_.timeout_us;
    out.arm_timer(deadline_us_);
    message msg;
    msg.header.kind = message_kind::pairwise_propose;
    msg.header.seq = exchange_;
    msg.header.weight = mine_w_;
    msg.tensors = mine_;
    send(out, cfg_.peers[j], std::move(msg));
  }

  error_code lock(std::size_t i, std::uint64_t e, const message& msg, time_us now_us,
                  action_sink& out) {
    auto theirs = keep(msg.tensors);
    if (!theirs) return theirs.error();
    auto snap = snapshot(model_.x);
    if (!snap) return snap.error();
    theirs_ = std::move(*theirs);
    theirs_w_ = msg.header.weight;
    mine_ = std::move(*snap);
    mine_w_ = model_.w;
    role_ = role::locked;
    peer_ = i;
    exchange_ = e;
    deadline_us_ = now_us + cfg_.timeout_us;
    out.arm_timer(deadline_us_);
    send_accept(out);
    return {};
  }

  error_code commit_as_proposer(const message& accept, action_sink& out) {
    // x += (x_j - x_i_sent) / 2. The responder adds the negation of the same rounded
    // difference, so the pair's mass changes only by the rounding of the two final additions.
    const set_term terms[] = {
        {accept.tensors.get(), 0.5f}, {mine_.get(), -0.5f}, {&model_.x, 1.0f}};
    if (auto ec = mix(model_.x, terms)) return ec;
    model_.w += 0.5 * accept.header.weight - 0.5 * mine_w_;
    committed_[peer_] = exchange_;
    ++stats_.exchanges_committed;
    role_ = role::idle;
    mine_.reset();
    send_control(out, peer_, message_kind::pairwise_commit, exchange_);
    return {};
  }

  error_code commit_as_responder() {
    const set_term terms[] = {{theirs_.get(), 0.5f}, {mine_.get(), -0.5f}, {&model_.x, 1.0f}};
    if (auto ec = mix(model_.x, terms)) return ec;
    model_.w += 0.5 * theirs_w_ - 0.5 * mine_w_;
    ++stats_.exchanges_committed;
    role_ = role::idle;
    theirs_.reset();
    mine_.reset();
    return {};
  }

  void send_accept(action_sink& out) {
    message msg;
    msg.header.kind = message_kind::pairwise_accept;
    msg.header.seq = exchange_;
    msg.header.weight = mine_w_;
    msg.tensors = mine_;
    send(out, cfg_.peers[peer_], std::move(msg));
  }

  void send_control(action_sink& out, std::size_t j, message_kind kind, std::uint64_t e) {
    message msg;
    msg.header.kind = kind;
    msg.header.seq = e;
    send(out, cfg_.peers[j], std::move(msg));
  }

  role role_ = role::idle;
  std::size_t peer_ = 0;        // the other side of the current exchange
  std::uint64_t exchange_ = 0;  // its id (chosen by the proposer)
  std::uint64_t next_exchange_ = 0;
  time_us deadline_us_ = 0;
  payload_ptr mine_;  // our x when the exchange began (sent in propose or accept)
  double mine_w_ = 0.0;
  payload_ptr theirs_;  // responder: the proposer's x
  double theirs_w_ = 0.0;
  // Per peer: the last exchange we proposed to it and committed. A responder waiting on an
  // older exchange cannot exist (it would have refused our later proposal), so one id suffices.
  std::vector<std::uint64_t> committed_;
  // Per peer: the newest exchange it proposed that we locked on. Proposers number exchanges in
  // increasing order, so an older or equal id is a delayed or duplicated proposal: locking on it
  // again would apply the exchange twice.
  std::vector<std::uint64_t> seen_;
  std::vector<std::size_t> live_;
  time_us next_tick_us_ = 0;
};

}  // namespace

std::unique_ptr<averaging_node> make_pairwise_node(const config& cfg, model m, gpu::backend& b,
                                                   gpu::stream& s) {
  return std::make_unique<pairwise_node>(cfg, std::move(m), b, s);
}

}  // namespace mws::gossip::detail
