// Exact averaging on a one-peer hypercube schedule (Ying et al. 2021), epoch by epoch, with the
// extra nodes of a non-power-of-two membership folded in before and handed their share after,
// over a membership the driver may change between epochs; an epoch that cannot finish is ended
// early without creating or destroying mass (README.md, "exact").
#include <algorithm>
#include <bit>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/exact_plan.hpp"
#include "gossip/detail/node_base.hpp"

namespace mws::gossip::detail {
namespace {

class exact_node final : public node_base {
 public:
  exact_node(const config& cfg, model initial, gpu::backend& b, gpu::stream& s)
      : node_base(cfg, std::move(initial), b, s), next_members_(cfg_.peers) {
    std::sort(next_members_.begin(), next_members_.end());
  }

  void start(time_us now_us, action_sink& out) override {
    next_epoch_us_ = std::max(now_us, cfg_.start_us);
    out.arm_timer(next_epoch_us_);
  }

  void on_tick(time_us now_us, action_sink& out) override {
    now_us_ = now_us;
    if (members_changed_) {
      // Let a changing membership settle before an epoch is built on it.
      members_changed_ = false;
      next_epoch_us_ = std::max(next_epoch_us_, now_us + cfg_.epoch_interval_us);
    }
    if (!active_ && may_begin() && now_us >= next_epoch_us_) begin(next_number(), now_us, out);
    if (active_) advance(now_us, out);  // a wait for an ack may have run out
    if (active_ && now_us - last_progress_us_ >= cfg_.timeout_us) stalled(now_us, out);
    resend_unsettled(now_us, out);
    const bool holding =
        std::any_of(ledger_.begin(), ledger_.end(), [](const entry& e) { return e.x != nullptr; });
    if (active_ || holding) {  // holding: re-sends are due (resend_unsettled)
      out.arm_timer(now_us + cfg_.tick_interval_us);
    } else if (may_begin()) {
      out.arm_timer(std::max(next_epoch_us_, now_us + 1));
    }
  }

  error_code on_message(peer_id from, const message& msg, time_us now_us,
                        action_sink& out) override {
    now_us_ = now_us;
    const auto ec = receive(from, msg, now_us, out);
    if (ec) ++stats_.refused;
    return ec;
  }

  void on_link_up(peer_id peer, time_us, action_sink&) override {
    if (auto i = peer_index(peer)) up_[*i] = true;
  }
  void on_link_down(peer_id peer, time_us, action_sink&) override {
    // A link that is down stalls the schedule (counted in stalls) until it returns; a member
    // that has failed is dropped by set_members instead.
    if (auto i = peer_index(peer)) up_[*i] = false;
  }

  error_code add_peer(peer_id peer) override {
    auto i = append_peer(peer);
    if (!i) return i.error();
    up_[*i] = true;
    return {};
  }

  // A restarted peer's old values may still be applied: its mass left with its old process.
  error_code reset_peer(peer_id peer) override {
    return peer_index(peer) ? error_code{} : error_code{errc::not_a_peer};
  }

  error_code set_members(std::span<const peer_id> members, std::uint64_t view, time_us now_us,
                         action_sink& out) override {
    if (auto ec = check_members(members)) return ec;
    std::vector<peer_id> sorted(members.begin(), members.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::equal(members.begin(), members.end(), next_members_.begin(), next_members_.end()) &&
        view == next_view_) {
      return {};
    }
    now_us_ = now_us;
    next_members_.assign(members.begin(), members.end());
    next_view_ = view;
    members_changed_ = true;
    if (active_) {
      // A member of the running epoch has gone: the epoch cannot finish. Stop waiting on it.
      for (const auto q : cur_.members) {
        if (!std::binary_search(sorted.begin(), sorted.end(), q)) lost(q);
      }
      advance(now_us, out);
    }
    return {};
  }

 private:
  // A step done with a peer, kept for repeats, late values and aborts.
  struct entry {
    round_t epoch = 0;
    std::uint32_t step = 0;
    peer_id peer;
    step_role what = step_role::exchange;  // exchange (x: the value sent), give (x: the share), or
                                           // the fold / take applied (no x)
    payload_ptr x;
    double w = 0.0;
    std::uint64_t view = 0;  // the epoch's view, sent with repeats
    bool low = false;        // exchange: this node is the lower member (its value goes first)
    bool answered = false;   // exchange: the partner's value was applied
    time_us sent_us = 0;     // when x was last sent, or the exchange answered
    bool acked = false;      // exchange: the partner applied ours before we applied theirs
  };
  // A value received for a step not yet reached.
  struct value {
    round_t epoch = 0;
    std::uint32_t step = 0;
    peer_id peer;
    std::uint64_t view = 0;
    bool request = false;
    payload_ptr x;
    double w = 0.0;
  };

  bool may_begin() const noexcept {
    const bool more = cfg_.exact_epochs == 0 || begun_count_ < cfg_.exact_epochs;
    return more && next_members_.size() >= 2;
  }
  round_t next_number() const noexcept {
    return begun_count_ == 0 ? newest_seen_ : std::max(cur_.epoch + 1, newest_seen_);
  }
  void note_epoch(round_t e) noexcept { newest_seen_ = std::max(newest_seen_, e); }

  entry* find(round_t e, std::uint32_t t, peer_id q) noexcept {
    for (auto& s : ledger_) {
      if (s.epoch == e && s.step == t && s.peer == q) return &s;
    }
    return nullptr;
  }
  // The value the running epoch's plan takes at `step` from `partner`, if it is in.
  value* inbox_find(std::uint32_t t, peer_id partner) noexcept {
    for (auto& v : inbox_) {
      if (v.epoch == cur_.epoch && v.step == t && v.peer == partner && v.view == cur_.view) {
        return &v;
      }
    }
    return nullptr;
  }
  bool inbox_has(round_t e, std::uint32_t t, peer_id q, std::uint64_t view) const noexcept {
    return std::any_of(inbox_.begin(), inbox_.end(), [&](const value& v) {
      return v.epoch == e && v.step == t && v.peer == q && v.view == view;
    });
  }

  error_code receive(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    if (!peer_index(from) || from == cfg_.self) return errc::not_a_peer;
    if (msg.header.kind == message_kind::exact_abort) return on_abort(from, msg, now_us, out);
    if (msg.header.kind == message_kind::exact_ack) return on_ack(from, msg, now_us, out);
    if (msg.header.kind != message_kind::exact_value) return errc::wrong_algorithm;
    if (msg.header.step > max_exact_step) return errc::out_of_range;
    if (auto ec = check_payload(msg, false)) return ec;
    if (!(msg.header.weight >= 0.0)) return errc::bad_weight;
    return on_value(from, msg, now_us, out);
  }

  // A value (or, seq 1, a request that we repeat ours) of epoch `round`, step `step`.
  error_code on_value(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    const round_t e = msg.header.round;
    const std::uint32_t t = msg.header.step;
    const bool request = msg.header.seq == 1;
    ++stats_.received;
    note_epoch(e);
    const bool repeated = request && repeat_sent(e, from, out);
    const bool here = active_ && e == cur_.epoch && t >= step_ && msg.header.view == cur_.view;
    if (here && cur_.takes_from(t, from)) return buffer(from, msg, now_us, out);
    if (here && request && cur_.gives_to(t, from)) return {};  // it comes when we get there
    if (auto* s = find(e, t, from); s && answer_done_step(*s, msg, out)) return {};
    if (repeated) return {};  // a stalled fold or take: its payload is only the request
    return on_unplanned_value(from, msg, now_us, out);
  }

  // The sender of a request waits on us: repeat what we still hold of what we sent it in that
  // epoch. Whether anything was.
  bool repeat_sent(round_t e, peer_id to, action_sink& out) {
    bool repeated = false;
    for (const auto& s : ledger_) {
      if (s.epoch == e && s.peer == to && s.x) {
        ++stats_.resent;
        send_entry(out, s, false);
        repeated = true;
      }
    }
    return repeated;
  }

  // A value for a step in our records (`s`): applied late, acknowledged again, or ignored.
  // False when the records do not settle it.
  bool answer_done_step(entry& s, const message& msg, action_sink& out) {
    const bool same_view = msg.header.view == s.view;
    if (s.what == step_role::exchange && !s.answered && same_view) {
      // We gave up waiting (a member failed, or the partner was silent), but sent our value:
      // the partner may have applied it, so we apply theirs now, as a local change. (Same
      // view, same plan: the sender's step with us is this exchange too.)
      apply_exchange(s, *msg.tensors, msg.header.weight);
      send_control(out, message_kind::exact_ack, s.epoch, s.step, s.peer);
      ++stats_.late_values;
      return true;
    }
    if (s.answered && same_view) {
      // A repeat of a value we applied: its sender missed our ack.
      ++stats_.ignored;
      send_control(out, message_kind::exact_ack, s.epoch, s.step, s.peer);
      return true;
    }
    if (s.what == step_role::give) {
      ++stats_.ignored;  // a taker's request: the give itself was repeated
      return true;
    }
    return false;
  }

  // A value that no step of ours takes now and our records do not settle: kept for a later
  // epoch, ignored when too old to tell, refused when our plans agree that no such step
  // exists, and otherwise aborted (the sender must not wait on us).
  error_code on_unplanned_value(peer_id from, const message& msg, time_us now_us,
                                action_sink& out) {
    const round_t e = msg.header.round;
    const std::uint32_t t = msg.header.step;
    if (!begun_any() || e > cur_.epoch) return buffer(from, msg, now_us, out);
    if (e + ledger_epochs < cur_.epoch) {
      ++stats_.ignored;  // older than our records: we cannot tell whether we applied it
      return {};
    }
    if (active_ && e == cur_.epoch && msg.header.view == cur_.view && t >= step_ &&
        !cur_.takes_from(t, from) && !cur_.gives_to(t, from)) {
      return errc::out_of_range;  // our plans agree, and it has no such step with us
    }
    // A value of a step we never ran with `from` and never will: an epoch that ended here, a
    // past one, or a membership or schedule we do not share. Tell the sender not to wait.
    send_abort(out, e, t, from);
    if (active_ && e == cur_.epoch) {
      ending_ = true;
      advance(now_us, out);
    }
    return {};
  }

  // Keeps `msg` for its step (once); an idle node begins the sender's epoch at once (it waits
  // on us).
  error_code buffer(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    const round_t e = msg.header.round;
    if (inbox_has(e, msg.header.step, from, msg.header.view)) {
      ++stats_.ignored;
      return {};
    }
    const auto later = [&](round_t x) { return !begun_any() || x > cur_.epoch; };
    if (later(e)) {
      // Besides the running epoch, one later epoch is kept: the newest; older ones are aborted.
      if (std::any_of(inbox_.begin(), inbox_.end(),
                      [&](const value& v) { return later(v.epoch) && v.epoch > e; })) {
        send_abort(out, e, msg.header.step, from);
        return {};
      }
      std::erase_if(inbox_, [&](const value& v) {
        const bool drop = later(v.epoch) && v.epoch < e;
        if (drop) send_abort(out, v.epoch, v.step, v.peer);
        return drop;
      });
    }
    // The payload may be borrowed: it is applied now if the schedule is there, else copied.
    const std::uint32_t t = msg.header.step;
    inbox_.push_back(
        {e, t, from, msg.header.view, msg.header.seq == 1, msg.tensors, msg.header.weight});
    if (active_) {
      advance(now_us, out);
    } else if (may_begin() && (!begun_any() || e > cur_.epoch)) {
      begin(e, now_us, out);
    }
    for (auto& v : inbox_) {
      if (v.epoch != e || v.step != t || v.peer != from) continue;
      auto kept = keep(v.x);
      if (!kept) {
        inbox_drop(e, t);
        return kept.error();
      }
      v.x = std::move(*kept);
      break;
    }
    return {};
  }

  error_code on_abort(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    const round_t e = msg.header.round;
    const std::uint32_t t = msg.header.step;
    ++stats_.received;
    note_epoch(msg.header.seq);
    if (auto* s = find(e, t, from)) {
      if (s->what == step_role::give && s->x) {
        // The receiver never took our mass: take it back.
        const set_term back[] = {{&model_.x, 1.0f}, {s->x.get(), 1.0f}};
        check(mix(model_.x, back));
        model_.w += s->w;
        ++stats_.gives_returned;
      } else if (s->what != step_role::exchange || s->answered) {
        ++stats_.ignored;  // the peer took it, or we applied: it cannot abort that step
        return {};
      }
      std::erase_if(ledger_, [&](const entry& x) { return &x == s; });
    }
    if (active_ && e == cur_.epoch) {
      if (t == step_ && waits_on(from)) sent_ = false;
      ending_ = true;
      advance(now_us, out);
    }
    return {};
  }

  // The peer applied our value of (round, step): our copy is needed no more once we applied
  // theirs too (the exchange's arithmetic uses it). The next step may have waited for it.
  error_code on_ack(peer_id from, const message& msg, time_us now_us, action_sink& out) {
    ++stats_.received;
    auto* s = find(msg.header.round, msg.header.step, from);
    if (!s) {
      ++stats_.ignored;
      return {};
    }
    if (s->what == step_role::exchange && !s->answered) {
      s->acked = true;  // it overtook the partner's value; our copy goes once that is applied
      return {};
    }
    s->x.reset();
    if (active_) advance(now_us, out);
    return {};
  }

  // A value this epoch sent at an earlier step is not acked yet: the step waits for the ack
  // before it copies the model again, so that a node holds one sent value at a time rather than
  // one per step (a model each). It waits at most timeout_us from the last step's end (the
  // stall threshold: a stall never finds a step waiting here); an ack later than that is not
  // waited for (its value is re-sent meanwhile, and the step goes on).
  bool awaiting_ack(time_us now_us) const noexcept {
    if (now_us - last_progress_us_ >= cfg_.timeout_us) return false;
    return std::any_of(ledger_.begin(), ledger_.end(), [&](const entry& s) {
      return s.x && s.epoch == cur_.epoch && s.step < step_ &&
             (s.what == step_role::give || s.answered);
    });
  }

  bool waits_on(peer_id q) const noexcept {
    peer_id partner;
    const step_role r = cur_.mine(step_, &partner);
    return r != step_role::none && r != step_role::give && partner == q;
  }

  // Member `q` of the running epoch is gone: end the epoch, without waiting on it.
  void lost(peer_id q) {
    ending_ = true;
    if (waits_on(q)) sent_ = false;  // a value sent to it stays in the ledger, applied if late
  }

  void begin(round_t e, time_us now_us, action_sink& out) {
    MWS_ASSERT(!active_);
    // Records of the last ledger_epochs epochs are kept (values still held with them stay
    // until acked or aborted, re-sent meanwhile); older ones go.
    std::erase_if(ledger_, [&](const entry& s) { return s.epoch + ledger_epochs < e; });
    cur_ = epoch_plan(e, next_members_, next_view_, cfg_.self);
    ++begun_count_;
    active_ = true;
    ending_ = false;
    sent_ = false;
    step_ = 0;
    resends_ = 0;
    last_progress_us_ = now_us;
    epoch_start_us_ = now_us;
    advance(now_us, out);
    // Values of epochs we skip, or that this epoch's plan has no use for, are answered now.
    std::erase_if(inbox_, [&](const value& v) {
      const bool useless = v.epoch < e || (v.epoch == e && (!cur_.takes_from(v.step, v.peer) ||
                                                            v.view != cur_.view || v.step < step_));
      const bool served = find(v.epoch, v.step, v.peer) ||
                          (v.request && v.epoch == e && cur_.gives_to(v.step, v.peer));
      if (useless && !served) send_abort(out, v.epoch, v.step, v.peer);
      return useless;
    });
    if (active_) advance(now_us, out);
  }

  void advance(time_us now_us, action_sink& out) {
    while (active_) {
      if (ending_ && !sent_) return end_epoch(false, now_us, out);
      peer_id partner;
      bool low = false;
      const step_role role = cur_.mine(step_, &partner, &low);
      switch (role) {
        case step_role::none:
          break;
        case step_role::give:
          if (awaiting_ack(now_us)) return;
          give(out, partner);
          break;
        case step_role::fold:
        case step_role::take: {
          auto* in = inbox_find(step_, partner);
          if (!in) return;
          const set_term terms[] = {{&model_.x, 1.0f}, {in->x.get(), 1.0f}};
          check(mix(model_.x, terms));
          model_.w += in->w;
          ledger_.push_back(
              {cur_.epoch, step_, partner, role, nullptr, in->w, cur_.view, low, true, now_us});
          inbox_drop(cur_.epoch, step_);
          send_control(out, message_kind::exact_ack, cur_.epoch, step_, partner);
          break;
        }
        case step_role::exchange: {
          if (!sent_) {
            if (awaiting_ack(now_us)) return;
            auto snap = snapshot(model_.x);
            MWS_ASSERT(snap.has_value());
            ledger_.push_back({cur_.epoch, step_, partner, step_role::exchange, std::move(*snap),
                               model_.w, cur_.view, low, false, now_us});
            count_held();
            send_entry(out, ledger_.back(), false);
            sent_ = true;
            last_progress_us_ = now_us;  // the partner's value is due from now
          }
          auto* in = inbox_find(step_, partner);
          if (!in) return;
          auto* mine = find(cur_.epoch, step_, partner);
          MWS_ASSERT(mine != nullptr);
          apply_exchange(*mine, *in->x, in->w);
          inbox_drop(cur_.epoch, step_);
          send_control(out, message_kind::exact_ack, cur_.epoch, step_, partner);
          sent_ = false;
          break;
        }
      }
      last_progress_us_ = now_us;
      resends_ = 0;
      if (step_ == cur_.last_step()) return end_epoch(true, now_us, out);
      ++step_;
      stats_.step = step_;
    }
  }

  // Both partners evaluate the same expression with the lower member's value first, so both
  // get the same bits: (x - x_sent) is +0 unless a local update arrived in between, and
  // 0.5*lo + 0.5*hi rounds identically on both sides.
  void apply_exchange(entry& mine, const tensor_set& theirs, double their_w) {
    const tensor_set& lo = mine.low ? *mine.x : theirs;
    const tensor_set& hi = mine.low ? theirs : *mine.x;
    const set_term terms[] = {{&model_.x, 1.0f}, {mine.x.get(), -1.0f}, {&lo, 0.5f}, {&hi, 0.5f}};
    check(mix(model_.x, terms));
    const double w_lo = mine.low ? mine.w : their_w;
    const double w_hi = mine.low ? their_w : mine.w;
    model_.w = (model_.w - mine.w) + (0.5 * w_lo + 0.5 * w_hi);
    mine.answered = true;
    mine.sent_us = now_us_;  // the partner's ack is due from now
    if (mine.acked) mine.x.reset();
  }

  // Hands our mass (step 0, an extra member) or half of it (last step, a folding member) to
  // the partner. Both are exact: x - x is 0 and x - x/2 is x/2 in binary floating point.
  void give(action_sink& out, peer_id partner) {
    auto share = tensor_set::allocate(backend_, model_.spec);
    MWS_ASSERT(share.has_value());
    const float fraction = step_ == 0 ? 1.0f : 0.5f;
    const set_term take[] = {{&model_.x, fraction}};
    check(mix(*share, take));
    const double w_share = step_ == 0 ? model_.w : 0.5 * model_.w;
    const set_term keep_rest[] = {{&model_.x, 1.0f}, {&*share, -1.0f}};
    check(mix(model_.x, keep_rest));
    model_.w -= w_share;
    ledger_.push_back({cur_.epoch, step_, partner, step_role::give,
                       std::make_shared<const tensor_set>(std::move(*share)), w_share, cur_.view,
                       false, false, now_us_});
    count_held();
    send_entry(out, ledger_.back(), false);
  }

  // Values we still hold (sent, neither acked nor aborted) of steps other than the one we wait
  // on now are re-sent every timeout_us to members: the peer answers with an ack (it applied
  // the value), an abort (it never will), or its own value (an exchange we gave up).
  void resend_unsettled(time_us now_us, action_sink& out) {
    for (auto& s : ledger_) {
      if (!s.x || now_us - s.sent_us < cfg_.timeout_us) continue;
      if (active_ && s.epoch == cur_.epoch && s.step == step_) continue;  // stalled() does it
      if (std::find(next_members_.begin(), next_members_.end(), s.peer) == next_members_.end()) {
        continue;
      }
      s.sent_us = now_us;
      ++stats_.resent;
      send_entry(out, s, s.what == step_role::exchange && !s.answered);
    }
  }

  // An epoch ended early: tell the partner of every step left that we will not do it, so that
  // nobody waits on us, and a share handed to us is taken back (a step we sent our value for
  // stays open to a late value instead).
  void abort_rest(action_sink& out) {
    for (std::uint32_t t = step_; t <= cur_.last_step(); ++t) {
      peer_id partner;
      if (cur_.mine(t, &partner) == step_role::none || find(cur_.epoch, t, partner)) continue;
      send_abort(out, cur_.epoch, t, partner);
    }
  }

  void end_epoch(bool completed, time_us now_us, action_sink& out) {
    if (!completed) abort_rest(out);
    if (completed) {
      ++stats_.round;
    } else {
      ++stats_.epochs_abandoned;
    }
    stats_.step = 0;
    active_ = false;
    ending_ = false;
    sent_ = false;
    next_epoch_us_ = std::max(now_us, epoch_start_us_ + cfg_.epoch_interval_us);
    std::erase_if(inbox_, [&](const value& v) {
      const bool ours = v.epoch <= cur_.epoch;
      if (ours && !find(v.epoch, v.step, v.peer)) send_abort(out, v.epoch, v.step, v.peer);
      return ours;
    });
  }

  // Stalled on a partner: ask it to repeat what it sent us, by sending ours (or, for a fold or
  // take, any value of ours tagged with the step; the giver ignores its payload). After
  // stall_resends_max unanswered requests, give the step up: the epoch ends, and a value sent
  // to the partner stays in the ledger, to be matched if the partner's value comes late.
  void stalled(time_us now_us, action_sink& out) {
    peer_id partner;
    const step_role role = cur_.mine(step_, &partner);
    // An exchange whose value is not out yet waits for an ack (awaiting_ack, which on_tick
    // has just ended): only a value in the ledger may go out, or the partner would apply a
    // copy that this node never accounts for.
    if (role == step_role::exchange && !sent_) return;
    ++stats_.stalls;
    last_progress_us_ = now_us;
    if (role == step_role::none || role == step_role::give) return;
    if (cfg_.stall_resends_max != 0 && resends_ >= cfg_.stall_resends_max) {
      lost(partner);
      return advance(now_us, out);
    }
    ++resends_;
    ++stats_.resent;
    if (const auto* s = find(cur_.epoch, step_, partner); s && s->x) {
      return send_entry(out, *s, true);
    }
    auto snap = snapshot(model_.x);
    MWS_ASSERT(snap.has_value());
    send_entry(out, entry{cur_.epoch, step_, partner, role, std::move(*snap), model_.w, cur_.view},
               true);
  }

  void count_held() noexcept {
    const auto held = std::count_if(ledger_.begin(), ledger_.end(),
                                    [](const entry& s) { return s.x != nullptr; });
    stats_.values_held_max = std::max(stats_.values_held_max, static_cast<std::uint32_t>(held));
  }

  void inbox_drop(round_t e, std::uint32_t t) {
    std::erase_if(inbox_, [&](const value& v) { return v.epoch == e && v.step == t; });
  }

  bool begun_any() const noexcept { return begun_count_ != 0; }

  void send_entry(action_sink& out, const entry& s, bool request) {
    message msg;
    msg.header.kind = message_kind::exact_value;
    msg.header.round = s.epoch;
    msg.header.step = s.step;
    msg.header.seq = request ? 1 : 0;
    msg.header.weight = s.w;
    msg.header.view = s.view;
    msg.tensors = s.x;
    send(out, s.peer, std::move(msg));
  }

  void send_abort(action_sink& out, round_t e, std::uint32_t t, peer_id to) {
    ++stats_.aborts_sent;
    send_control(out, message_kind::exact_abort, e, t, to);
  }

  // An abort or an ack of (e, t); seq: the epoch this node runs, or else the one it would
  // begin next. (Not the one after the running one: its receiver would skip the epoch we run,
  // we would then abort its epoch, skip that one in turn, and so on, neither ever completing.)
  void send_control(action_sink& out, message_kind kind, round_t e, std::uint32_t t, peer_id to) {
    message msg;
    msg.header.kind = kind;
    msg.header.round = e;
    msg.header.step = t;
    msg.header.seq = active_ ? cur_.epoch : next_number();
    send(out, to, std::move(msg));
  }

  static void check(error_code ec) { MWS_ASSERT(!ec && "mixing own buffers cannot fail"); }

  // Steps done are remembered this many epochs (a value older than that is ignored).
  static constexpr round_t ledger_epochs = 16;

  std::vector<peer_id> next_members_;  // the membership of the next epoch, in schedule order
  std::uint64_t next_view_ = 0;
  bool members_changed_ = false;
  epoch_plan cur_;  // the epoch running, or the last one run
  std::uint64_t begun_count_ = 0;
  round_t newest_seen_ = 0;  // the largest epoch number heard of
  bool active_ = false;
  bool ending_ = false;     // end the epoch as soon as no exchange we started is open
  bool sent_ = false;       // our value of the current exchange step is out, theirs not in
  std::uint32_t step_ = 0;  // 0 .. k + 1
  std::uint32_t resends_ = 0;
  time_us epoch_start_us_ = 0;
  time_us next_epoch_us_ = 0;
  time_us last_progress_us_ = 0;
  time_us now_us_ = 0;         // of the call being handled
  std::vector<value> inbox_;   // partners' values of the running and of one later epoch
  std::vector<entry> ledger_;  // steps done with peers in this and the previous epoch
};

}  // namespace

std::unique_ptr<averaging_node> make_exact_node(const config& cfg, model m, gpu::backend& b,
                                                gpu::stream& s) {
  return std::make_unique<exact_node>(cfg, std::move(m), b, s);
}

}  // namespace mws::gossip::detail
