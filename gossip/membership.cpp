#include "gossip/membership.hpp"

#include <algorithm>
#include <cmath>

#include "gossip/detail/assert.hpp"
#include "gossip/detail/log.hpp"

namespace mws::gossip {
namespace {

bool is_live(member_state s) noexcept {
  return s == member_state::alive || s == member_state::suspect;
}

// ceil(log10(n + 1)), at least 1: how many rounds of gossip reach n nodes, up to a factor.
std::uint32_t log10_rounds(std::size_t n) noexcept {
  std::uint32_t r = 1;
  for (std::size_t v = 10; v < n + 1; v *= 10)
    ++r;
  return r;
}

bool valid_row(const member_update& u) noexcept {
  return u.address.size() <= max_address_bytes && static_cast<std::uint8_t>(u.state) <= 3;
}

}  // namespace

membership::membership(membership_config cfg) : cfg_(std::move(cfg)), rng_(cfg_.seed) {
  MWS_ASSERT(cfg_.probe_interval_us > 0);
  MWS_ASSERT(cfg_.probe_timeout_us > 0 && cfg_.probe_timeout_us < cfg_.probe_interval_us);
  MWS_ASSERT(cfg_.awareness_max >= 1 && cfg_.suspicion_max_factor >= 1);
  MWS_ASSERT(cfg_.push_pull_interval_us > 0 && cfg_.reconnect_interval_us > 0);
  MWS_ASSERT(cfg_.gossip_interval_us > 0);
  MWS_ASSERT(cfg_.members_max >= 1 && cfg_.updates_per_message_max >= 1);
  MWS_ASSERT(cfg_.broadcasts_max >= 1);
  MWS_ASSERT(cfg_.self_address.size() <= max_address_bytes);
}

// ---- inputs --------------------------------------------------------------------------------

void membership::start(time_us now_us, membership_sink& out) {
  // A random phase, so that nodes started together do not probe in lockstep.
  next_probe_us_ =
      now_us + static_cast<time_us>(rng_.below(static_cast<std::uint64_t>(cfg_.probe_interval_us)));
  next_push_pull_us_ = now_us + cfg_.push_pull_interval_us;
  next_reconnect_us_ = now_us + reconnect_interval();
  next_gossip_us_ = now_us + cfg_.gossip_interval_us;
  for (const auto& seed : cfg_.seeds) {
    if (seed == cfg_.self_address) continue;
    out.send({std::nullopt, seed}, swim::push_pull{true, false, full_state()});
  }
  rearm(now_us, out);
}

void membership::on_message(const node_key& from, const swim::message& msg, time_us now_us,
                            membership_sink& out) {
  auto apply_all = [&](const std::vector<member_update>& updates) {
    if (updates.size() > cfg_.updates_per_message_max) {
      ++stats_.refused;
      return false;
    }
    for (const auto& u : updates)
      apply(u, from, now_us, out);
    return true;
  };
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, swim::ping>) {
          if (m.target != cfg_.self || !apply_all(m.updates)) {
            if (m.target != cfg_.self) ++stats_.refused;
            return;
          }
          out.send(to(from), swim::ack{m.seq, piggyback()});
        } else if constexpr (std::is_same_v<T, swim::ack>) {
          if (!apply_all(m.updates)) return;
          if (probe_ && m.seq == probe_->seq) {
            probe_.reset();
            adjust_awareness(-1);
          } else if (auto r = relays_.find(m.seq); r != relays_.end()) {
            out.send(to(r->second.origin), swim::ack{r->second.origin_seq, {}});
            relays_.erase(r);
          }
        } else if constexpr (std::is_same_v<T, swim::ping_req>) {
          if (relays_.size() >= cfg_.pending_relays_max || !valid_row(m.target) ||
              m.target.id == cfg_.self) {
            ++stats_.refused;
            return;
          }
          const std::uint32_t seq = next_seq_++;
          out.send({m.target.id, m.target.address},
                   swim::ping{seq, m.target.id, updates_for(m.target.id)});
          // The nack must reach the prober before its own deadline: 80% of the timeout.
          relays_[seq] = relay{from, m.seq, now_us + scaled(cfg_.probe_timeout_us) * 4 / 5};
        } else if constexpr (std::is_same_v<T, swim::nack>) {
          if (probe_ && m.seq == probe_->seq && probe_->nacks_received < probe_->nacks_expected) {
            ++probe_->nacks_received;
            ++stats_.nacks_received;
          }
        } else if constexpr (std::is_same_v<T, swim::gossip>) {
          apply_all(m.updates);
        } else if constexpr (std::is_same_v<T, swim::push_pull>) {
          if (m.members.size() > cfg_.members_max + 1) {
            ++stats_.refused;
            return;
          }
          ++stats_.push_pulls;
          merge(m.members, from, now_us, out);
          if (!m.reply) out.send(to(from), swim::push_pull{false, true, full_state()});
        }
      },
      msg);
  rearm(now_us, out);
}

void membership::on_tick(time_us now_us, membership_sink& out) {
  forget_old_dead(now_us);
  check_relays(now_us, out);
  if (probe_ && !probe_->indirect_sent && now_us >= probe_->indirect_at_us) {
    const auto helpers = random_alive_members(cfg_.indirect_probes, probe_->target);
    for (const auto& h : helpers) {
      out.send(
          to(h),
          swim::ping_req{probe_->seq,
                         {probe_->target, to(probe_->target).address, 0, member_state::alive, {}}});
    }
    probe_->indirect_sent = true;
    probe_->nacks_expected = static_cast<std::uint32_t>(helpers.size());
    stats_.indirect_probes += helpers.size();
  }
  if (probe_ && now_us >= probe_->give_up_at_us) finish_probe(now_us, out);
  if (now_us >= next_probe_us_) {
    start_probe(now_us, out);
    next_probe_us_ = now_us + scaled(cfg_.probe_interval_us);
  }
  check_suspicions(now_us, out);
  if (now_us >= next_push_pull_us_) {
    push_pull_with_random_member(now_us, out);
    next_push_pull_us_ = now_us + push_pull_interval();
  }
  if (now_us >= next_gossip_us_) {
    gossip_to_random_members(out);
    next_gossip_us_ = now_us + cfg_.gossip_interval_us;
  }
  if (now_us >= next_reconnect_us_) {
    reconnect(now_us, out);
    next_reconnect_us_ = now_us + reconnect_interval();
  }
  rearm(now_us, out);
}

void membership::leave(time_us now_us, membership_sink& out) {
  leaving_ = true;
  queue({cfg_.self, cfg_.self_address, incarnation_, member_state::left, cfg_.self});
  // Tell a few members at once rather than waiting for the next probes to carry it.
  for (const auto& id : random_alive_members(cfg_.indirect_probes + 1, cfg_.self)) {
    out.send(to(id), swim::push_pull{false,
                                     true,
                                     {{cfg_.self, cfg_.self_address, incarnation_,
                                       member_state::left, cfg_.self}}});
  }
  rearm(now_us, out);
}

std::size_t membership::alive_count() const noexcept {
  return 1 + static_cast<std::size_t>(
                 std::count_if(members_.begin(), members_.end(),
                               [](const auto& m) { return is_live(m.second.state); }));
}

// ---- applying updates (SWIM's rules, incarnation numbers decide) -------------------------

void membership::apply(const member_update& u, const node_key& from, time_us now_us,
                       membership_sink& out) {
  if (!valid_row(u)) {
    ++stats_.refused;
    return;
  }
  switch (u.state) {
    case member_state::alive:
      on_alive(u, now_us, out);
      break;
    case member_state::suspect:
      on_suspect(u, from, now_us, out);
      break;
    case member_state::dead:
    case member_state::left:
      on_dead(u, from, now_us, out);
      break;
  }
}

void membership::on_alive(const member_update& u, time_us now_us, membership_sink& out) {
  if (u.id == cfg_.self) {
    // An alive row about us from a previous life (a restart) would outrank us: move past it.
    if (u.incarnation > incarnation_ && !leaving_) refute(u.incarnation);
    return;
  }
  auto it = members_.find(u.id);
  if (it == members_.end()) {
    if (members_.size() >= cfg_.members_max) {
      ++stats_.refused;
      return;
    }
    members_[u.id] = member_info{u.address, u.incarnation, member_state::alive, now_us, {}};
    queue(u);
    emit(membership_event::kind::joined, u.id, out);
    return;
  }
  member_info& m = it->second;
  if (u.incarnation <= m.incarnation) return;
  const bool was_live = m.state == member_state::alive;
  m = member_info{
      u.address.empty() ? m.address : u.address, u.incarnation, member_state::alive, now_us, {}};
  suspicions_.erase(u.id);
  queue({u.id, m.address, u.incarnation, member_state::alive, {}});
  if (!was_live) emit(membership_event::kind::alive_again, u.id, out);
}

void membership::on_suspect(const member_update& u, const node_key&, time_us now_us,
                            membership_sink& out) {
  if (u.id == cfg_.self) {
    // Only an accusation at our current incarnation needs an answer; older ones are stale
    // rumours that our last refutation already outranks.
    if (!leaving_ && u.incarnation >= incarnation_) refute(u.incarnation);
    return;
  }
  auto it = members_.find(u.id);
  if (it == members_.end() || u.incarnation < it->second.incarnation) return;
  member_info& m = it->second;
  if (m.state == member_state::suspect) {
    // An independent confirmation shortens the suspicion (Lifeguard).
    auto& s = suspicions_[u.id];
    m.incarnation = u.incarnation;
    const bool known = u.accuser == s.first_accuser ||
                       std::find(s.confirmations.begin(), s.confirmations.end(), u.accuser) !=
                           s.confirmations.end();
    if (!known && s.confirmations.size() < s.expected) {
      s.confirmations.push_back(u.accuser);
      queue(u);  // spread the independent confirmation too
    }
    return;
  }
  if (m.state != member_state::alive) return;  // dead or left stays so
  m.state = member_state::suspect;
  m.incarnation = u.incarnation;
  m.since_us = now_us;
  m.accuser = u.accuser;
  const std::size_t n = alive_count();
  suspicion s;
  s.start_us = now_us;
  s.first_accuser = u.accuser;
  // Confirmations can come only from members other than the suspect and the first accuser.
  s.expected =
      static_cast<std::uint32_t>(std::min<std::size_t>(cfg_.indirect_probes, n > 2 ? n - 2 : 0));
  const double rounds = std::max(
      1.0, detail::deterministic_log(static_cast<double>(n)) / detail::deterministic_log(10.0));
  s.min_us = static_cast<time_us>(cfg_.suspicion_multiplier * rounds *
                                  static_cast<double>(cfg_.probe_interval_us));
  s.max_us = s.min_us * cfg_.suspicion_max_factor;
  suspicions_[u.id] = std::move(s);
  queue(u);
  emit(membership_event::kind::suspected, u.id, out);
}

void membership::on_dead(const member_update& u, const node_key& from, time_us now_us,
                         membership_sink& out) {
  if (u.id == cfg_.self) {
    if (!leaving_ && u.incarnation >= incarnation_) refute(u.incarnation);
    return;
  }
  auto it = members_.find(u.id);
  if (it == members_.end() || u.incarnation < it->second.incarnation || !is_live(it->second.state))
    return;
  const bool left = u.state == member_state::left || (from == u.id && u.accuser == u.id);
  member_info& m = it->second;
  m.state = left ? member_state::left : member_state::dead;
  m.incarnation = u.incarnation;
  m.since_us = now_us;
  m.accuser = u.accuser;
  suspicions_.erase(u.id);
  queue({u.id, "", u.incarnation, m.state, u.accuser});
  emit(left ? membership_event::kind::left : membership_event::kind::failed, u.id, out);
}

void membership::refute(std::uint64_t accused_incarnation) {
  incarnation_ = std::max(incarnation_, accused_incarnation) + 1;
  queue(self_update());
  ++stats_.refutations;
  adjust_awareness(+1);  // being suspected hints that we are the slow one (Lifeguard)
}

// Push-pull rows: a remote "dead" is only a suspicion here, so one node's mistake cannot kill a
// member everywhere (memberlist does the same).
void membership::merge(const std::vector<member_update>& rows, const node_key& from, time_us now_us,
                       membership_sink& out) {
  for (member_update u : rows) {
    if (u.state == member_state::dead && u.id != cfg_.self) u.state = member_state::suspect;
    apply(u, from, now_us, out);
  }
}

// ---- dissemination ---------------------------------------------------------------------------

void membership::queue(member_update u) {
  if (auto it = pending_.find(u.id); it != pending_.end()) {
    send_order_.erase(it->second.second);
    pending_.erase(it);
  } else if (pending_.size() >= cfg_.broadcasts_max) {
    const queued most_sent = *std::prev(send_order_.end());
    send_order_.erase(std::prev(send_order_.end()));
    pending_.erase(most_sent.id);
  }
  const queued q{0, next_order_++, u.id};
  send_order_.insert(q);
  pending_.emplace(u.id, std::pair{std::move(u), q});
}

std::vector<member_update> membership::piggyback() {
  const std::uint32_t limit = cfg_.retransmit_multiplier * log10_rounds(members_.size() + 1);
  std::vector<member_update> out;
  std::vector<queued> sent;
  for (auto it = send_order_.begin();
       it != send_order_.end() && out.size() < cfg_.updates_per_message_max;) {
    out.push_back(pending_.at(it->id).first);
    sent.push_back(*it);
    it = send_order_.erase(it);
  }
  for (queued q : sent) {
    if (++q.transmits >= limit) {
      pending_.erase(q.id);
    } else {
      pending_.at(q.id).second = q;
      send_order_.insert(q);
    }
  }
  return out;
}

// Lifeguard's buddy system: a ping to a member we suspect carries the suspicion itself, so the
// member learns of it at once and can refute it before the timeout, instead of waiting for the
// rumour to reach it by chance.
std::vector<member_update> membership::updates_for(const node_key& target) {
  std::vector<member_update> updates = piggyback();
  auto it = members_.find(target);
  if (it != members_.end() && it->second.state == member_state::suspect) {
    const member_update accusation{target, "", it->second.incarnation, member_state::suspect,
                                   cfg_.self};
    if (updates.size() == cfg_.updates_per_message_max) updates.pop_back();
    updates.insert(updates.begin(), accusation);
  }
  return updates;
}

std::vector<member_update> membership::full_state() const {
  std::vector<member_update> rows{self_update()};
  // A suspicion travels with its original accuser: relaying a rumour is not a confirmation.
  for (const auto& [id, m] : members_)
    rows.push_back({id, m.address, m.incarnation, m.state, m.accuser});
  return rows;
}

// ---- probing -------------------------------------------------------------------------------

void membership::start_probe(time_us now_us, membership_sink& out) {
  if (probe_) finish_probe(now_us, out);
  const auto target = next_probe_target();
  if (!target) return;
  probe_state p;
  p.target = *target;
  p.seq = next_seq_++;
  p.indirect_at_us = now_us + scaled(cfg_.probe_timeout_us);
  p.give_up_at_us = now_us + scaled(cfg_.probe_interval_us);
  probe_ = p;
  ++stats_.probes;
  out.send(to(p.target), swim::ping{p.seq, p.target, updates_for(p.target)});
}

void membership::finish_probe(time_us now_us, membership_sink& out) {
  const probe_state p = *probe_;
  probe_.reset();
  ++stats_.probes_failed;
  // Lifeguard: nacks that did not come mean the trouble may be ours, not the target's.
  adjust_awareness(p.nacks_expected > 0 ? static_cast<int>(p.nacks_expected - p.nacks_received)
                                        : 1);
  auto it = members_.find(p.target);
  // A failed probe of a member already suspected is an independent confirmation (Lifeguard),
  // which shortens the suspicion everywhere it spreads.
  if (it != members_.end() && is_live(it->second.state)) {
    on_suspect({p.target, "", it->second.incarnation, member_state::suspect, cfg_.self}, cfg_.self,
               now_us, out);
  }
}

void membership::check_suspicions(time_us now_us, membership_sink& out) {
  std::vector<member_update> expired;
  for (const auto& [id, s] : suspicions_) {
    if (now_us - s.start_us >= suspicion_timeout(s)) {
      expired.push_back({id, "", members_.at(id).incarnation, member_state::dead, cfg_.self});
    }
  }
  for (const auto& u : expired)
    on_dead(u, cfg_.self, now_us, out);
}

void membership::check_relays(time_us now_us, membership_sink& out) {
  for (auto it = relays_.begin(); it != relays_.end();) {
    if (now_us >= it->second.nack_at_us) {
      out.send(to(it->second.origin), swim::nack{it->second.origin_seq});
      it = relays_.erase(it);
    } else {
      ++it;
    }
  }
}

time_us membership::suspicion_timeout(const suspicion& s) const noexcept {
  if (s.expected == 0) return s.min_us;
  const double fraction =
      detail::deterministic_log(static_cast<double>(s.confirmations.size()) + 1.0) /
      detail::deterministic_log(static_cast<double>(s.expected) + 1.0);
  const auto t = static_cast<time_us>(static_cast<double>(s.max_us) -
                                      static_cast<double>(s.max_us - s.min_us) * fraction);
  return std::max(t, s.min_us);
}

std::optional<node_key> membership::next_probe_target() {
  for (int pass = 0; pass < 2; ++pass) {
    while (probe_index_ < probe_order_.size()) {
      const node_key id = probe_order_[probe_index_++];
      auto it = members_.find(id);
      if (it != members_.end() && is_live(it->second.state)) return id;
    }
    // A new randomised round: every live member once, in a fresh order (SWIM's round-robin
    // bounds the time to first probe a failed member).
    probe_order_.clear();
    for (const auto& [id, m] : members_) {
      if (is_live(m.state)) probe_order_.push_back(id);
    }
    for (std::size_t i = probe_order_.size(); i > 1; --i) {
      std::swap(probe_order_[i - 1], probe_order_[rng_.below(i)]);
    }
    probe_index_ = 0;
  }
  return std::nullopt;
}

std::vector<node_key> membership::random_alive_members(std::size_t count, const node_key& except) {
  std::vector<node_key> pool;
  for (const auto& [id, m] : members_) {
    if (m.state == member_state::alive && id != except) pool.push_back(id);
  }
  for (std::size_t i = 0; i < pool.size() && i < count; ++i) {
    std::swap(pool[i], pool[i + rng_.below(pool.size() - i)]);
  }
  pool.resize(std::min(count, pool.size()));
  return pool;
}

// ---- anti-entropy and healing ----------------------------------------------------------------

void membership::push_pull_with_random_member(time_us, membership_sink& out) {
  const auto peer = random_alive_members(1, cfg_.self);
  if (peer.empty()) return;
  out.send(to(peer.front()), swim::push_pull{false, false, full_state()});
}

void membership::gossip_to_random_members(membership_sink& out) {
  if (pending_.empty()) return;
  for (const auto& id : random_alive_members(cfg_.gossip_fanout, cfg_.self)) {
    std::vector<member_update> updates = piggyback();
    if (updates.empty()) break;
    ++stats_.gossips;
    out.send(to(id), swim::gossip{std::move(updates)});
  }
}

time_us membership::reconnect_interval() noexcept {
  // A node with seeds and no live member (its seed was not up when it started, say) tries
  // again sooner: after a probe interval, doubling up to the reconnect interval, each time
  // with up to half of it added at random, so that nodes started together do not dial in step.
  const bool alone = alive_count() <= 1 &&
                     std::any_of(cfg_.seeds.begin(), cfg_.seeds.end(),
                                 [&](const std::string& s) { return s != cfg_.self_address; });
  if (!alone) {
    alone_backoff_us_ = 0;
    return cfg_.reconnect_interval_us;
  }
  alone_backoff_us_ = alone_backoff_us_ == 0
                          ? std::min(cfg_.probe_interval_us, cfg_.reconnect_interval_us)
                          : std::min(2 * alone_backoff_us_, cfg_.reconnect_interval_us);
  const auto jitter =
      static_cast<time_us>(rng_.below(static_cast<std::uint64_t>(alone_backoff_us_ / 2 + 1)));
  return alone_backoff_us_ + jitter;
}

void membership::reconnect(time_us, membership_sink& out) {
  std::vector<const std::string*> seeds;
  for (const auto& s : cfg_.seeds) {
    if (s != cfg_.self_address) seeds.push_back(&s);
  }
  if (!seeds.empty()) {
    out.send({std::nullopt, *seeds[rng_.below(seeds.size())]},
             swim::push_pull{true, false, full_state()});
  }
  std::vector<node_key> dead;
  for (const auto& [id, m] : members_) {
    if (m.state == member_state::dead && !m.address.empty()) dead.push_back(id);
  }
  if (!dead.empty()) {
    out.send(to(dead[rng_.below(dead.size())]), swim::push_pull{true, false, full_state()});
  }
}

void membership::forget_old_dead(time_us now_us) {
  std::erase_if(members_, [&](const auto& entry) {
    return !is_live(entry.second.state) && now_us - entry.second.since_us > cfg_.dead_retention_us;
  });
}

// ---- helpers -------------------------------------------------------------------------------

void membership::adjust_awareness(int delta) {
  const int max = static_cast<int>(cfg_.awareness_max) - 1;
  stats_.awareness =
      static_cast<std::uint32_t>(std::clamp(static_cast<int>(stats_.awareness) + delta, 0, max));
}

// A full push-pull costs O(members) on both sides, so big meshes do it less often, as memberlist
// does: the interval grows by one step per doubling of the mesh beyond 32 members.
time_us membership::push_pull_interval() const noexcept {
  time_us factor = 1;
  for (std::size_t n = members_.size() + 1; n > 32; n /= 2)
    ++factor;
  return cfg_.push_pull_interval_us * std::max<time_us>(1, factor - 1);
}

time_us membership::scaled(time_us base) const noexcept {
  return base * static_cast<time_us>(stats_.awareness + 1);
}

destination membership::to(const node_key& id) const {
  auto it = members_.find(id);
  return {id, it == members_.end() ? std::string() : it->second.address};
}

member_update membership::self_update() const {
  return {cfg_.self, cfg_.self_address, incarnation_,
          leaving_ ? member_state::left : member_state::alive, cfg_.self};
}

void membership::emit(membership_event::kind k, const node_key& id, membership_sink& out) const {
  out.on_event({k, id, to(id).address});
}

void membership::rearm(time_us now_us, membership_sink& out) {
  time_us next = std::min({next_probe_us_, next_push_pull_us_, next_reconnect_us_});
  if (!pending_.empty()) next = std::min(next, next_gossip_us_);
  if (probe_)
    next = std::min(
        {next, probe_->indirect_sent ? next : probe_->indirect_at_us, probe_->give_up_at_us});
  for (const auto& [seq, r] : relays_)
    next = std::min(next, r.nack_at_us);
  for (const auto& [id, s] : suspicions_)
    next = std::min(next, s.start_us + suspicion_timeout(s));
  if (armed_for_us_ <= now_us || next < armed_for_us_) {
    armed_for_us_ = next;
    out.arm_timer(next);
  }
}

}  // namespace mws::gossip
