#include "gossip/membership.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

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

// Equality by words, inline: the index compares keys on every probe, and the library memcmp it
// replaced was the top entry of a 1,000-node study's profile.
bool same_key(const node_key& a, const node_key& b) noexcept {
  std::array<std::uint64_t, 4> x, y;
  std::memcpy(x.data(), a.bytes.data(), sizeof x);
  std::memcpy(y.data(), b.bytes.data(), sizeof y);
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

std::uint64_t salt_of(std::uint64_t seed, std::uint64_t stream) noexcept {
  std::uint64_t state = seed ^ stream;
  return rng::splitmix64(state);
}

}  // namespace

// ---- detail::key_index ---------------------------------------------------------------------

namespace detail {

std::size_t key_index::home(const node_key& k) const noexcept {
  std::uint64_t h = salt_;
  for (std::size_t i = 0; i < k.bytes.size(); i += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, k.bytes.data() + i, sizeof word);
    h = (h ^ word) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
  }
  return static_cast<std::size_t>(h) & (cells_.size() - 1);
}

template <class KeyOf>
std::size_t key_index::position(const node_key& k, const KeyOf& key_of) const {
  std::size_t i = home(k);
  while (cells_[i] != none && !same_key(key_of(cells_[i]), k))
    i = (i + 1) & (cells_.size() - 1);
  return i;
}

template <class KeyOf>
std::uint32_t key_index::find(const node_key& k, const KeyOf& key_of) const {
  return cells_.empty() ? none : cells_[position(k, key_of)];
}

template <class KeyOf>
void key_index::insert(const node_key& k, std::uint32_t value, const KeyOf& key_of) {
  MWS_ASSERT(value != none);
  if ((size_ + 1) * 4 > cells_.size() * 3) grow(key_of);
  const std::size_t i = position(k, key_of);
  MWS_ASSERT(cells_[i] == none);
  cells_[i] = value;
  ++size_;
}

// Backward-shift deletion: later entries of the probe chain move up into the hole, so that no
// tombstones accumulate.
template <class KeyOf>
void key_index::erase(const node_key& k, const KeyOf& key_of) {
  const std::size_t mask = cells_.size() - 1;
  std::size_t hole = position(k, key_of);
  MWS_ASSERT(cells_[hole] != none);
  for (std::size_t j = (hole + 1) & mask; cells_[j] != none; j = (j + 1) & mask) {
    const std::size_t h = home(key_of(cells_[j]));
    if (((j - h) & mask) >= ((j - hole) & mask)) {  // the hole is on j's probe chain
      cells_[hole] = cells_[j];
      hole = j;
    }
  }
  cells_[hole] = none;
  --size_;
}

template <class KeyOf>
void key_index::grow(const KeyOf& key_of) {
  std::vector<std::uint32_t> old(std::max<std::size_t>(16, cells_.size() * 2), none);
  old.swap(cells_);
  for (const std::uint32_t v : old) {
    if (v != none) cells_[position(key_of(v), key_of)] = v;
  }
}

// ---- detail::rank_counts -------------------------------------------------------------------

void rank_counts::build(const std::vector<std::uint8_t>& flags) {
  size_ = flags.size();
  bits_.assign((size_ + 63) / 64, 0);
  tree_.assign(bits_.size(), 0);
  for (std::size_t p = 0; p < size_; ++p) {
    if (flags[p]) bits_[p / 64] |= std::uint64_t{1} << (p % 64);
  }
  for (std::size_t i = 1; i <= tree_.size(); ++i) {
    tree_[i - 1] += static_cast<std::uint32_t>(std::popcount(bits_[i - 1]));
    const std::size_t parent = i + (i & (0 - i));
    if (parent <= tree_.size()) tree_[parent - 1] += tree_[i - 1];
  }
}

void rank_counts::add(std::size_t pos, bool set) {
  MWS_ASSERT(pos < size_);
  const std::uint64_t bit = std::uint64_t{1} << (pos % 64);
  MWS_ASSERT(((bits_[pos / 64] & bit) != 0) != set);
  bits_[pos / 64] ^= bit;
  for (std::size_t i = pos / 64 + 1; i <= tree_.size(); i += i & (0 - i))
    tree_[i - 1] = set ? tree_[i - 1] + 1 : tree_[i - 1] - 1;
}

std::size_t rank_counts::before(std::size_t pos) const noexcept {
  std::size_t sum = 0;
  for (std::size_t i = pos / 64; i > 0; i -= i & (0 - i))
    sum += tree_[i - 1];
  if (pos % 64 != 0)
    sum += static_cast<std::size_t>(
        std::popcount(bits_[pos / 64] & ((std::uint64_t{1} << (pos % 64)) - 1)));
  return sum;
}

std::size_t rank_counts::nth(std::size_t k) const noexcept {
  std::size_t word = 0;  // words before the one that holds the answer
  for (std::size_t step = std::bit_floor(tree_.size()); step > 0; step /= 2) {
    if (word + step <= tree_.size() && tree_[word + step - 1] <= k) {
      word += step;
      k -= tree_[word - 1];
    }
  }
  if (word == bits_.size()) return size_;
  std::uint64_t w = bits_[word];
  if (static_cast<std::size_t>(std::popcount(w)) <= k) return size_;
  for (; k > 0; --k)
    w &= w - 1;  // drop the lowest set bit
  return word * 64 + static_cast<std::size_t>(std::countr_zero(w));
}

}  // namespace detail

// ---- member_table --------------------------------------------------------------------------

member_table::const_iterator& member_table::const_iterator::operator++() noexcept {
  s_ = t_->next_used(s_ + 1);
  return *this;
}

member_table::const_iterator member_table::begin() const noexcept {
  return {this, next_used(0)};
}

member_table::const_iterator member_table::find(const node_key& id) const {
  const slot s = slot_of(id);
  return s == none ? end() : const_iterator{this, s};
}

member_info member_table::at(const node_key& id) const {
  const slot s = slot_of(id);
  MWS_ASSERT(s != none);
  return info(s);
}

member_table::slot member_table::slot_of(const node_key& id) const {
  return index_.find(id, [&](slot s) -> const node_key& { return rows_[s].id; });
}

std::string_view member_table::address(slot s) const noexcept {
  return std::string_view(addresses_).substr(rows_[s].address_at, rows_[s].address_size);
}

const node_key& member_table::accuser(slot s) const {
  static const node_key nobody{};
  return rows_[s].state == member_state::alive ? nobody : not_alive_.at(rows_[s].id);
}

member_info member_table::info(slot s) const {
  const row& r = rows_[s];
  return {std::string(address(s)), r.incarnation, r.state, r.since_us, accuser(s)};
}

member_table::slot member_table::insert(const node_key& id, std::string_view address,
                                        std::uint64_t incarnation, time_us now_us) {
  slot s;
  if (free_.empty()) {
    s = static_cast<slot>(rows_.size());
    MWS_ASSERT(s != none);
    rows_.emplace_back();
  } else {
    s = free_.back();
    free_.pop_back();
  }
  rows_[s] = row{id, incarnation, now_us, 0, 0, member_state::alive, true};
  set_address(s, address);
  index_.insert(id, s, [&](slot x) -> const node_key& { return rows_[x].id; });
  ++alive_;
  ++live_;
  by_key_.push_back(s);
  counted_ = false;
  return s;
}

void member_table::set_status(slot s, member_state state, std::uint64_t incarnation,
                              time_us since_us, const node_key& accuser) {
  row& r = rows_[s];
  const bool was_alive = r.state == member_state::alive;
  const bool was_live = r.state == member_state::alive || r.state == member_state::suspect;
  live_ -= r.state == member_state::alive || r.state == member_state::suspect;
  live_ += state == member_state::alive || state == member_state::suspect;
  r.state = state;
  r.incarnation = incarnation;
  r.since_us = since_us;
  if (state == member_state::alive) {
    not_alive_.erase(r.id);
  } else {
    not_alive_.insert_or_assign(r.id, accuser);
  }
  count_states(s, was_alive, was_live);
}

void member_table::set_address(slot s, std::string_view address) {
  MWS_ASSERT(address.size() <= max_address_bytes);
  if (this->address(s) == address) return;
  const std::size_t old_size = rows_[s].address_size;
  rows_[s].address_at = static_cast<std::uint32_t>(addresses_.size());
  rows_[s].address_size = static_cast<std::uint16_t>(address.size());
  addresses_.append(address);
  release_address_bytes(old_size);
}

void member_table::erase(slot s) {
  row& r = rows_[s];
  MWS_ASSERT(r.used);
  index_.erase(r.id, [&](slot x) -> const node_key& { return rows_[x].id; });
  const auto at = std::find(by_key_.begin(), by_key_.end(), s);
  if (static_cast<std::size_t>(at - by_key_.begin()) < sorted_) --sorted_;
  by_key_.erase(at);
  counted_ = false;
  alive_ -= r.state == member_state::alive;
  live_ -= r.state == member_state::alive || r.state == member_state::suspect;
  not_alive_.erase(r.id);
  const std::size_t address_size = r.address_size;
  r = row{};
  free_.push_back(s);
  release_address_bytes(address_size);
}

const std::vector<member_table::slot>& member_table::by_key() {
  sort();
  return by_key_;
}

std::size_t member_table::rank_before(slot s, bool live) {
  sort();
  return (live ? live_by_key_ : alive_by_key_).before(position(s));
}

member_table::slot member_table::nth(std::size_t k, bool live) {
  MWS_ASSERT(k < (live ? live_ : alive_));
  sort();
  return by_key_[(live ? live_by_key_ : alive_by_key_).nth(k)];
}

member_table::slot member_table::next_used(slot s) const noexcept {
  while (s < rows_.size() && !rows_[s].used)
    ++s;
  return s;
}

std::size_t member_table::position(slot s) const {
  MWS_ASSERT(counted_ && s < position_.size() && by_key_[position_[s]] == s);
  return position_[s];
}

// Newcomers are sorted on demand, together: a node that learns a whole table from one push-pull
// sorts once instead of shifting the order for each member.
void member_table::sort() {
  auto by_id = [&](slot a, slot b) { return rows_[a].id < rows_[b].id; };
  if (sorted_ < by_key_.size()) {
    const auto mid = by_key_.begin() + static_cast<std::ptrdiff_t>(sorted_);
    std::sort(mid, by_key_.end(), by_id);
    std::inplace_merge(by_key_.begin(), mid, by_key_.end(), by_id);
    sorted_ = by_key_.size();
    counted_ = false;
  }
  if (!counted_) {
    std::vector<std::uint8_t> alive(by_key_.size()), live(by_key_.size());
    position_.assign(rows_.size(), 0);
    for (std::size_t i = 0; i < by_key_.size(); ++i) {
      const member_state state = rows_[by_key_[i]].state;
      alive[i] = state == member_state::alive;
      live[i] = state == member_state::alive || state == member_state::suspect;
      position_[by_key_[i]] = static_cast<std::uint32_t>(i);
    }
    alive_by_key_.build(alive);
    live_by_key_.build(live);
    counted_ = true;
  }
}

void member_table::count_states(slot s, bool was_alive, bool was_live) {
  const member_state state = rows_[s].state;
  const bool is_alive = state == member_state::alive;
  const bool is_live = is_alive || state == member_state::suspect;
  if (is_alive != was_alive) alive_ = is_alive ? alive_ + 1 : alive_ - 1;
  if (!counted_) return;
  if (is_alive != was_alive || is_live != was_live) {
    const std::size_t pos = position(s);
    if (is_alive != was_alive) alive_by_key_.add(pos, is_alive);
    if (is_live != was_live) live_by_key_.add(pos, is_live);
  }
}

void member_table::release_address_bytes(std::size_t n) {
  address_garbage_ += n;
  if (address_garbage_ > 4096 && address_garbage_ * 2 > addresses_.size()) compact_addresses();
}

void member_table::compact_addresses() {
  std::string kept;
  kept.reserve(addresses_.size() - address_garbage_);
  for (row& r : rows_) {
    kept.append(addresses_, r.address_at, r.address_size);
    r.address_at = static_cast<std::uint32_t>(kept.size() - r.address_size);
  }
  addresses_ = std::move(kept);
  address_garbage_ = 0;
}

// ---- membership ----------------------------------------------------------------------------

membership::membership(membership_config cfg)
    : cfg_(std::move(cfg)),
      rng_(cfg_.seed),
      members_(salt_of(cfg_.seed, 1)),
      suspicion_index_(salt_of(cfg_.seed, 3)),
      broadcast_index_(salt_of(cfg_.seed, 2)) {
  MWS_ASSERT(cfg_.probe_interval_us > 0);
  MWS_ASSERT(cfg_.probe_timeout_us > 0 && cfg_.probe_timeout_us < cfg_.probe_interval_us);
  MWS_ASSERT(cfg_.awareness_max >= 1 && cfg_.suspicion_max_factor >= 1);
  MWS_ASSERT(cfg_.push_pull_interval_us > 0 && cfg_.reconnect_interval_us > 0);
  MWS_ASSERT(cfg_.gossip_interval_us > 0);
  MWS_ASSERT(cfg_.members_max >= 1 && cfg_.members_max < forgotten_turn);
  MWS_ASSERT(cfg_.updates_per_message_max >= 1);
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
    const auto helpers = random_members(cfg_.indirect_probes, probe_->target, false);
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
  for (const auto& id : random_members(cfg_.indirect_probes + 1, cfg_.self, false)) {
    out.send(to(id), swim::push_pull{false,
                                     true,
                                     {{cfg_.self, cfg_.self_address, incarnation_,
                                       member_state::left, cfg_.self}}});
  }
  rearm(now_us, out);
}

std::size_t membership::alive_count() const noexcept {
  return 1 + members_.live();
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
  const auto m = members_.slot_of(u.id);
  if (m == member_table::none) {
    if (members_.size() >= cfg_.members_max) {
      ++stats_.refused;
      return;
    }
    members_.insert(u.id, u.address, u.incarnation, now_us);
    queue(u);
    emit(membership_event::kind::joined, u.id, out);
    return;
  }
  if (u.incarnation <= members_.incarnation(m)) return;
  const bool was_live = members_.state(m) == member_state::alive;
  if (!u.address.empty()) members_.set_address(m, u.address);
  members_.set_status(m, member_state::alive, u.incarnation, now_us, {});
  end_suspicion(u.id);
  queue({u.id, std::string(members_.address(m)), u.incarnation, member_state::alive, {}});
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
  const auto m = members_.slot_of(u.id);
  if (m == member_table::none || u.incarnation < members_.incarnation(m)) return;
  if (members_.state(m) == member_state::suspect && u.incarnation == members_.incarnation(m)) {
    // An independent confirmation shortens the suspicion (Lifeguard).
    const std::uint32_t at = find_suspicion(u.id);
    MWS_ASSERT(at != detail::key_index::none);  // a suspect has its suspicion until it ends
    suspicion& s = suspicions_[at];
    const bool known = u.accuser == s.first_accuser ||
                       std::find(s.confirmations.begin(), s.confirmations.end(), u.accuser) !=
                           s.confirmations.end();
    if (!known && s.confirmations.size() < s.expected) {
      s.confirmations.push_back(u.accuser);
      schedule(at, s.deadline_us);
      queue(u);  // spread the independent confirmation too
    }
    return;
  }
  if (!is_live(members_.state(m))) return;  // dead or left stays so
  // A suspicion at a newer incarnation than the one we suspect is a new suspicion, with its own
  // timer and accusers: the member refuted the old one (we missed that), and must have the
  // whole timeout to refute this one. Folding it into the old suspicion instead, with the
  // incarnation raised, declared the member dead at its current incarnation when the old timer
  // ran out, a death that every node holding that incarnation accepts.
  const bool was_suspect = members_.state(m) == member_state::suspect;
  end_suspicion(u.id);
  members_.set_status(m, member_state::suspect, u.incarnation, now_us, u.accuser);
  const std::size_t n = alive_count();
  std::uint32_t at;
  if (free_suspicions_.empty()) {
    at = static_cast<std::uint32_t>(suspicions_.size());
    suspicions_.emplace_back();
  } else {
    at = free_suspicions_.back();
    free_suspicions_.pop_back();
  }
  suspicion& s = suspicions_[at];
  s.id = u.id;
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
  s.confirmations.clear();
  suspicion_index_.insert(u.id, at,
                          [&](std::uint32_t x) -> const node_key& { return suspicions_[x].id; });
  schedule(at, -1);
  queue(u);
  if (!was_suspect) emit(membership_event::kind::suspected, u.id, out);
}

void membership::on_dead(const member_update& u, const node_key& from, time_us now_us,
                         membership_sink& out) {
  if (u.id == cfg_.self) {
    if (!leaving_ && u.incarnation >= incarnation_) refute(u.incarnation);
    return;
  }
  const auto m = members_.slot_of(u.id);
  if (m == member_table::none || u.incarnation < members_.incarnation(m) ||
      !is_live(members_.state(m)))
    return;
  const bool left = u.state == member_state::left || (from == u.id && u.accuser == u.id);
  const member_state state = left ? member_state::left : member_state::dead;
  members_.set_status(m, state, u.incarnation, now_us, u.accuser);
  earliest_gone_us_ = std::min(earliest_gone_us_, now_us);
  end_suspicion(u.id);
  queue({u.id, "", u.incarnation, state, u.accuser});
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
  auto key_of = [&](std::uint32_t b) -> const node_key& { return broadcasts_[b].update.id; };
  if (const auto b = broadcast_index_.find(u.id, key_of); b != detail::key_index::none) {
    unqueue(b);
  } else if (send_order_.size() >= cfg_.broadcasts_max) {
    unqueue(send_order_.back().slot);  // the most sent
  }
  std::uint32_t b;
  if (free_broadcasts_.empty()) {
    b = static_cast<std::uint32_t>(broadcasts_.size());
    broadcasts_.emplace_back();
  } else {
    b = free_broadcasts_.back();
    free_broadcasts_.pop_back();
  }
  broadcasts_[b] = {std::move(u), queued{0, b, next_order_++}};
  broadcast_index_.insert(broadcasts_[b].update.id, b, key_of);
  insert_in_order(broadcasts_[b].place);
}

void membership::unqueue(std::uint32_t slot) {
  const queued q = broadcasts_[slot].place;
  const auto at = std::lower_bound(send_order_.begin(), send_order_.end(), q, queued_first{});
  MWS_ASSERT(at != send_order_.end() && *at == q);
  send_order_.erase(at);
  drop_broadcast(slot);
}

void membership::drop_broadcast(std::uint32_t slot) {
  broadcast_index_.erase(broadcasts_[slot].update.id, [&](std::uint32_t b) -> const node_key& {
    return broadcasts_[b].update.id;
  });
  broadcasts_[slot] = {};
  free_broadcasts_.push_back(slot);
}

void membership::insert_in_order(const queued& q) {
  send_order_.insert(std::upper_bound(send_order_.begin(), send_order_.end(), q, queued_first{}),
                     q);
}

std::vector<member_update> membership::piggyback() {
  const std::uint32_t limit = cfg_.retransmit_multiplier * log10_rounds(members_.size() + 1);
  std::vector<member_update> out;
  std::vector<queued> sent;
  while (!send_order_.empty() && out.size() < cfg_.updates_per_message_max) {
    out.push_back(broadcasts_[send_order_.front().slot].update);
    sent.push_back(send_order_.front());
    send_order_.pop_front();
  }
  for (queued q : sent) {
    if (++q.transmits >= limit) {
      drop_broadcast(q.slot);
    } else {
      broadcasts_[q.slot].place = q;
      insert_in_order(q);
    }
  }
  return out;
}

// Lifeguard's buddy system: a ping to a member we suspect carries the suspicion itself, so the
// member learns of it at once and can refute it before the timeout, instead of waiting for the
// rumour to reach it by chance.
std::vector<member_update> membership::updates_for(const node_key& target) {
  std::vector<member_update> updates = piggyback();
  const auto m = members_.slot_of(target);
  if (m != member_table::none && members_.state(m) == member_state::suspect) {
    const member_update accusation{target, "", members_.incarnation(m), member_state::suspect,
                                   cfg_.self};
    if (updates.size() == cfg_.updates_per_message_max) updates.pop_back();
    updates.insert(updates.begin(), accusation);
  }
  return updates;
}

std::vector<member_update> membership::full_state() {
  std::vector<member_update> rows{self_update()};
  rows.reserve(members_.size() + 1);
  // A suspicion travels with its original accuser: relaying a rumour is not a confirmation.
  for (const auto m : members_.by_key()) {
    rows.push_back({members_.id(m), std::string(members_.address(m)), members_.incarnation(m),
                    members_.state(m), members_.accuser(m)});
  }
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
  const auto m = members_.slot_of(p.target);
  // A failed probe of a member already suspected is an independent confirmation (Lifeguard),
  // which shortens the suspicion everywhere it spreads.
  if (m != member_table::none && is_live(members_.state(m))) {
    on_suspect({p.target, "", members_.incarnation(m), member_state::suspect, cfg_.self}, cfg_.self,
               now_us, out);
  }
}

void membership::check_suspicions(time_us now_us, membership_sink& out) {
  std::vector<node_key> due;
  for (auto it = suspicion_deadlines_.begin();
       it != suspicion_deadlines_.end() && it->first <= now_us; ++it)
    due.push_back(suspicions_[it->second].id);
  std::sort(due.begin(), due.end());  // events and broadcasts in key order, as ever
  std::vector<member_update> expired;
  for (const auto& id : due) {
    expired.push_back(
        {id, "", members_.incarnation(members_.slot_of(id)), member_state::dead, cfg_.self});
  }
  for (const auto& u : expired)
    on_dead(u, cfg_.self, now_us, out);
}

// Suspicions by deadline, so that ticks and timers look only at the earliest (a big mesh under
// loss keeps hundreds open at every node).
std::uint32_t membership::find_suspicion(const node_key& id) const {
  return suspicion_index_.find(
      id, [&](std::uint32_t x) -> const node_key& { return suspicions_[x].id; });
}

// old_deadline_us: where the suspicion stands in suspicion_deadlines_ (-1: not yet there).
void membership::schedule(std::uint32_t at, time_us old_deadline_us) {
  suspicion& s = suspicions_[at];
  if (old_deadline_us >= 0) suspicion_deadlines_.erase({old_deadline_us, at});
  s.deadline_us = s.start_us + suspicion_timeout(s);
  suspicion_deadlines_.insert({s.deadline_us, at});
}

void membership::end_suspicion(const node_key& id) {
  const std::uint32_t at = find_suspicion(id);
  if (at == detail::key_index::none) return;
  suspicion_deadlines_.erase({suspicions_[at].deadline_us, at});
  suspicion_index_.erase(id, [&](std::uint32_t x) -> const node_key& { return suspicions_[x].id; });
  free_suspicions_.push_back(at);
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
      const auto turn = probe_order_[probe_index_++];
      const auto m =
          turn & forgotten_turn ? members_.slot_of(forgotten_turns_[turn - forgotten_turn]) : turn;
      if (m != member_table::none && is_live(members_.state(m))) return members_.id(m);
    }
    // A new randomised round: every live member once, in a fresh order (SWIM's round-robin
    // bounds the time to first probe a failed member).
    probe_order_.clear();
    forgotten_turns_.clear();
    for (const auto m : members_.by_key()) {
      if (is_live(members_.state(m))) probe_order_.push_back(m);
    }
    for (std::size_t i = probe_order_.size(); i > 1; --i) {
      std::swap(probe_order_[i - 1], probe_order_[rng_.below(i)]);
    }
    probe_index_ = 0;
  }
  return std::nullopt;
}

// A partial Fisher-Yates shuffle of the alive (or live) members but `except`, in key order, that
// touches only the positions it swaps: the picks of shuffling a copy of a key-sorted map, in
// O(count log n) instead of O(n).
std::vector<node_key> membership::random_members(std::size_t count, const node_key& except,
                                                 bool suspects_too) {
  const auto skipped = members_.slot_of(except);
  auto counted = [&](member_table::slot m) {
    const member_state state = members_.state(m);
    return state == member_state::alive || (suspects_too && state == member_state::suspect);
  };
  const bool skip = skipped != member_table::none && counted(skipped);
  const std::size_t pool = (suspects_too ? members_.live() : members_.alive()) - (skip ? 1 : 0);
  const std::size_t skipped_rank = skip ? members_.rank_before(skipped, suspects_too) : pool;
  std::vector<std::pair<std::size_t, std::size_t>> swapped;  // position, alive rank now there
  auto at = [&](std::size_t pos) {
    for (const auto& [p, rank] : swapped) {
      if (p == pos) return rank;
    }
    return pos < skipped_rank ? pos : pos + 1;
  };
  auto put = [&](std::size_t pos, std::size_t rank) {
    for (auto& [p, r] : swapped) {
      if (p == pos) return void(r = rank);
    }
    swapped.emplace_back(pos, rank);
  };
  std::vector<node_key> picked;
  for (std::size_t i = 0; i < pool && i < count; ++i) {
    const std::size_t j = i + rng_.below(pool - i);
    const std::size_t rank_i = at(i), rank_j = at(j);
    put(i, rank_j);
    put(j, rank_i);
    picked.push_back(members_.id(members_.nth(rank_j, suspects_too)));
  }
  return picked;
}

// ---- anti-entropy and healing ----------------------------------------------------------------

void membership::push_pull_with_random_member(time_us, membership_sink& out) {
  const auto peer = random_members(1, cfg_.self, false);
  if (peer.empty()) return;
  out.send(to(peer.front()), swim::push_pull{false, false, full_state()});
}

// To suspects as well as alive members, as memberlist does: a suspect hears of its suspicion in
// time to refute it, and keeps hearing other news meanwhile. Gossiping to alive members only
// left a suspect to the rare ping that carries its suspicion, and deaf to other members'
// refutations (in a 300-node study at 10% loss: 8,579 false deaths in 960 s, then 1).
void membership::gossip_to_random_members(membership_sink& out) {
  if (send_order_.empty()) return;
  for (const auto& id : random_members(cfg_.gossip_fanout, cfg_.self, true)) {
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
  for (const auto& [id, accuser] : members_.not_alive()) {
    const auto m = members_.slot_of(id);
    if (members_.state(m) == member_state::dead && !members_.address(m).empty()) dead.push_back(id);
  }
  if (!dead.empty()) {
    out.send(to(dead[rng_.below(dead.size())]), swim::push_pull{true, false, full_state()});
  }
}

// Scans only when the longest-gone member may be due: ticks are frequent, and under loss many
// members are suspects at any time.
void membership::forget_old_dead(time_us now_us) {
  if (now_us - earliest_gone_us_ <= cfg_.dead_retention_us) return;
  earliest_gone_us_ = std::numeric_limits<time_us>::max();
  std::vector<member_table::slot> old;
  for (const auto& [id, accuser] : members_.not_alive()) {
    const auto m = members_.slot_of(id);
    if (is_live(members_.state(m))) continue;
    if (now_us - members_.since_us(m) > cfg_.dead_retention_us) {
      old.push_back(m);
    } else {
      earliest_gone_us_ = std::min(earliest_gone_us_, members_.since_us(m));
    }
  }
  for (const auto m : old)
    forget(m);
}

// A forgotten member keeps its turn in the round by key: it may come back (in another slot)
// before its turn, and its slot may soon hold another member.
void membership::forget(member_table::slot m) {
  for (std::size_t i = probe_index_; i < probe_order_.size(); ++i) {
    if (probe_order_[i] != m) continue;
    probe_order_[i] = forgotten_turn + static_cast<member_table::slot>(forgotten_turns_.size());
    forgotten_turns_.push_back(members_.id(m));
  }
  members_.erase(m);
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
  const auto m = members_.slot_of(id);
  return {id, m == member_table::none ? std::string() : std::string(members_.address(m))};
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
  if (!send_order_.empty()) next = std::min(next, next_gossip_us_);
  if (probe_)
    next = std::min(
        {next, probe_->indirect_sent ? next : probe_->indirect_at_us, probe_->give_up_at_us});
  for (const auto& [seq, r] : relays_)
    next = std::min(next, r.nack_at_us);
  if (!suspicion_deadlines_.empty()) next = std::min(next, suspicion_deadlines_.begin()->first);
  if (armed_for_us_ <= now_us || next < armed_for_us_) {
    armed_for_us_ = next;
    out.arm_timer(next);
  }
}

}  // namespace mws::gossip
