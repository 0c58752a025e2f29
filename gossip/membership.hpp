// SWIM membership with the Lifeguard refinements, as a sans-I/O state machine.
//
// Who is in the mesh: each node probes one member per period (randomised round-robin), asks k
// others to probe indirectly when the direct probe goes unanswered, suspects a member that
// neither answers, and declares it dead when the suspicion is not refuted in time. A member
// refutes a suspicion by raising its incarnation number. Changes spread by piggybacking on
// probes and acks, and a periodic push-pull exchange of the whole table repairs what
// piggybacking missed (Das et al. 2002; HashiCorp memberlist).
//
// Lifeguard (Dadgar et al. 2018): a local health score (0..awareness_max-1) stretches this
// node's probe period and timeouts when it misses acks or nacks, so a struggling node slows
// down instead of accusing healthy ones; suspicion timeouts start long and shrink with each
// independent confirmation; intermediaries send a nack when the target stays silent, so the
// prober can tell its own trouble from the target's.
//
// Healing: nodes that only probe live members never rediscover the other side of a healed
// partition. This machine keeps re-dialling its seeds and recently dead members with push-pull
// joins, so partitions heal with no operator.
//
// Identity: members are named by their node_key (the transport's public key); the address is
// how to dial them, opaque here. Driven by one thread; time and randomness are injected, like
// every state machine of gossip/ (see node.hpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <boost/system/error_code.hpp>

#include "gossip/rng.hpp"
#include "gossip/types.hpp"

namespace mws::gossip {

// A member's identity: its 32-byte public key.
struct node_key {
  std::array<std::uint8_t, 32> bytes{};
  friend constexpr auto operator<=>(const node_key&, const node_key&) = default;
};

enum class member_state : std::uint8_t { alive = 0, suspect = 1, dead = 2, left = 3 };

inline constexpr std::size_t max_address_bytes = 256;

// One row of a member table, as it travels in updates and push-pull.
struct member_update {
  node_key id;
  std::string address;  // empty in suspect/dead updates
  std::uint64_t incarnation = 0;
  member_state state = member_state::alive;
  // suspect and dead: who accused. Suspicions shrink only with confirmations from distinct
  // accusers, not with every relay of one rumour.
  node_key accuser;
  friend bool operator==(const member_update&, const member_update&) = default;
};

namespace swim {

struct ping {
  std::uint32_t seq = 0;
  node_key target;  // a node that is not the target ignores the ping (it was meant for another)
  std::vector<member_update> updates;
};
struct ack {
  std::uint32_t seq = 0;
  std::vector<member_update> updates;
};
struct ping_req {
  std::uint32_t seq = 0;
  member_update target;  // id and address of the member to probe
};
struct nack {
  std::uint32_t seq = 0;
};
struct push_pull {
  bool join = false;   // a (re)joining node: the receiver answers even if it knows the sender
  bool reply = false;  // an answer: not answered again
  std::vector<member_update> members;
};

// Updates alone, sent every gossip interval to a few random members while any are pending:
// piggybacking on probes alone spreads news too slowly in a big, lossy mesh.
struct gossip {
  std::vector<member_update> updates;
};

using message = std::variant<ping, ack, ping_req, nack, push_pull, gossip>;

}  // namespace swim

struct membership_event {
  enum class kind : std::uint8_t { joined, suspected, alive_again, failed, left };
  kind what = kind::joined;
  node_key id;
  std::string address;
};

// Where a message goes: a known member (by key, with its address for dialling), or a seed
// address whose key is not known yet.
struct destination {
  std::optional<node_key> id;
  std::string address;
};

class membership_sink {
 public:
  virtual ~membership_sink() = default;
  virtual void send(const destination& to, swim::message msg) = 0;
  virtual void arm_timer(time_us at_us) = 0;
  virtual void on_event(const membership_event& e) = 0;
};

struct membership_config {
  node_key self;
  std::string self_address;
  std::vector<std::string> seeds;  // addresses to join through and to keep re-dialling

  time_us probe_interval_us = 1'000'000;
  time_us gossip_interval_us = 200'000;  // pending updates go to gossip_fanout members this often
  std::uint32_t gossip_fanout = 3;
  time_us probe_timeout_us = 500'000;
  std::uint32_t indirect_probes = 3;        // k
  std::uint32_t suspicion_multiplier = 4;   // min suspicion = mult * log10(n) * probe interval
  std::uint32_t suspicion_max_factor = 6;   // max suspicion = factor * min suspicion
  std::uint32_t retransmit_multiplier = 4;  // an update rides mult * ceil(log10(n + 1)) messages
  std::uint32_t awareness_max = 8;          // Lifeguard local health levels
  time_us push_pull_interval_us = 30'000'000;
  time_us reconnect_interval_us = 10'000'000;  // re-dial a seed and a recently dead member
                                               // (alone: from one probe interval, doubling)
  time_us dead_retention_us = 600'000'000;     // forget dead members after this
  std::size_t members_max = 65536;             // table size; joins beyond it are refused
  std::size_t updates_per_message_max = 16;    // piggybacked updates per ping / ack
  std::size_t pending_relays_max = 1024;       // ping_req relays in flight
  std::size_t broadcasts_max = 1024;           // updates waiting to be piggybacked
  std::uint64_t seed = 0;
};

struct membership_stats {
  std::uint64_t probes = 0;
  std::uint64_t probes_failed = 0;  // neither direct nor indirect ack
  std::uint64_t indirect_probes = 0;
  std::uint64_t nacks_received = 0;
  std::uint64_t refutations = 0;  // times this node raised its incarnation
  std::uint64_t push_pulls = 0;
  std::uint64_t gossips = 0;
  std::uint64_t refused = 0;  // messages or rows refused (bounds, malformed)
  std::uint32_t awareness = 0;
};

struct member_info {
  std::string address;
  std::uint64_t incarnation = 0;
  member_state state = member_state::alive;
  time_us since_us = 0;
  node_key accuser;  // suspect, dead: who first accused (passed on in push-pull rows)
};

namespace detail {

// Open addressing with linear probing, from a node_key to a 32-bit value whose key is stored
// elsewhere (key_of(value)), so that an entry costs 4 bytes. Salted per node: peers choose their
// keys and must not be able to pile them onto one probe chain.
class key_index {
 public:
  static constexpr std::uint32_t none = 0xffffffff;
  explicit key_index(std::uint64_t salt) noexcept : salt_(salt) {}
  template <class KeyOf>
  std::uint32_t find(const node_key& k, const KeyOf& key_of) const;
  template <class KeyOf>
  void insert(const node_key& k, std::uint32_t value, const KeyOf& key_of);
  template <class KeyOf>
  void erase(const node_key& k, const KeyOf& key_of);

 private:
  std::size_t home(const node_key& k) const noexcept;
  template <class KeyOf>
  std::size_t position(const node_key& k, const KeyOf& key_of) const;  // of k, or an empty cell
  template <class KeyOf>
  void grow(const KeyOf& key_of);

  std::vector<std::uint32_t> cells_;  // `none` or a value; the size is a power of two
  std::size_t size_ = 0;
  std::uint64_t salt_;
};

// How many of positions 0..n-1 are set, by prefix: O(log n) to flip a position, count those
// before one, or find the k-th set one. One bit per position, and a Fenwick tree over the counts
// of each 64-bit word: every node holds two of these over its whole table, so they are kept
// small (n/4 bytes, where a Fenwick tree of one count per position took 8n) and an update
// touches a few cache lines instead of one per level.
class rank_counts {
 public:
  void build(const std::vector<std::uint8_t>& flags);  // one 0 or 1 per position, O(n)
  void add(std::size_t pos, bool set);                 // a position becomes set (or unset)
  std::size_t before(std::size_t pos) const noexcept;
  // The position with k set ones before it; size() when there are no more than k.
  std::size_t nth(std::size_t k) const noexcept;
  std::size_t size() const noexcept { return size_; }

 private:
  std::vector<std::uint64_t> bits_;  // position p is bit p % 64 of bits_[p / 64]
  std::vector<std::uint32_t> tree_;  // tree_[i - 1] counts the set bits of words (i - lowbit(i), i]
  std::size_t size_ = 0;
};

}  // namespace detail

// The member table of one node, compact because every node holds one row per member: a flat
// row of 56 bytes (addresses back to back in one string), a 4-byte hash index entry, and the
// rows in key order with counts of alive and of live members by rank, rebuilt after members come
// or go. The key order makes each random pick the one a key-sorted map would give, so decisions
// do not depend on where a row happens to be stored. Owned and changed by membership; others read
// it through membership::members(), like a map, in no particular order.
class member_table {
 public:
  using slot = std::uint32_t;
  static constexpr slot none = detail::key_index::none;

  class const_iterator {
   public:
    using iterator_category = std::input_iterator_tag;  // rows are made on demand
    using difference_type = std::ptrdiff_t;
    using value_type = std::pair<node_key, member_info>;
    using reference = value_type;
    struct pointer {
      value_type v;
      const value_type* operator->() const noexcept { return &v; }
    };
    value_type operator*() const { return {t_->id(s_), t_->info(s_)}; }
    pointer operator->() const { return {**this}; }
    const_iterator& operator++() noexcept;
    const_iterator operator++(int) noexcept {
      const_iterator before = *this;
      ++*this;
      return before;
    }
    friend bool operator==(const const_iterator&, const const_iterator&) = default;

   private:
    friend class member_table;
    const_iterator(const member_table* t, slot s) noexcept : t_(t), s_(s) {}
    const member_table* t_ = nullptr;
    slot s_ = 0;
  };

  explicit member_table(std::uint64_t salt) noexcept : index_(salt) {}

  // Reading, map-like.
  std::size_t size() const noexcept { return rows_.size() - free_.size(); }
  bool empty() const noexcept { return size() == 0; }
  std::size_t count(const node_key& id) const { return slot_of(id) == none ? 0 : 1; }
  const_iterator find(const node_key& id) const;
  member_info at(const node_key& id) const;  // the member must be present
  const_iterator begin() const noexcept;
  const_iterator end() const noexcept { return {this, static_cast<slot>(rows_.size())}; }

  // Rows by slot.
  slot slot_of(const node_key& id) const;  // `none` when absent
  const node_key& id(slot s) const noexcept { return rows_[s].id; }
  std::string_view address(slot s) const noexcept;
  member_state state(slot s) const noexcept { return rows_[s].state; }
  std::uint64_t incarnation(slot s) const noexcept { return rows_[s].incarnation; }
  time_us since_us(slot s) const noexcept { return rows_[s].since_us; }
  const node_key& accuser(slot s) const;  // zero for alive members
  member_info info(slot s) const;
  std::size_t alive() const noexcept { return alive_; }
  std::size_t live() const noexcept { return live_; }  // alive or suspect
  // Members not alive (suspect, dead, left) and their accusers, in key order.
  const std::map<node_key, node_key>& not_alive() const noexcept { return not_alive_; }

  // Changes, by membership.
  slot insert(const node_key& id, std::string_view address, std::uint64_t incarnation,
              time_us now_us);  // an alive member
  void set_status(slot s, member_state state, std::uint64_t incarnation, time_us since_us,
                  const node_key& accuser);
  void set_address(slot s, std::string_view address);
  void erase(slot s);

  // In key order (sorting newcomers in first).
  const std::vector<slot>& by_key();
  // Ranks in key order among the alive members, or with `live` among the live ones (alive or
  // suspect): how many have a smaller key than s (itself counted), and the k-th of them.
  std::size_t rank_before(slot s, bool live);
  slot nth(std::size_t k, bool live);  // k < live ? live() : alive()

 private:
  struct row {
    node_key id;
    std::uint64_t incarnation = 0;
    time_us since_us = 0;
    std::uint32_t address_at = 0;  // in addresses_
    std::uint16_t address_size = 0;
    member_state state = member_state::alive;
    bool used = false;
  };

  slot next_used(slot s) const noexcept;
  std::size_t position(slot s) const;  // in by_key_, which must be sorted
  void sort();
  void count_states(slot s, bool was_alive, bool was_live);
  void release_address_bytes(std::size_t n);  // no row uses them any more
  void compact_addresses();

  std::vector<row> rows_;
  std::vector<slot> free_;
  detail::key_index index_;
  std::string addresses_;            // every row's address, back to back
  std::size_t address_garbage_ = 0;  // bytes of addresses_ that no row uses any more
  std::map<node_key, node_key> not_alive_;
  std::size_t alive_ = 0, live_ = 0;
  std::vector<slot> by_key_;  // sorted up to sorted_, newcomers after
  std::size_t sorted_ = 0;
  // by slot: the place in by_key_, valid when counted_ (a binary search over the rows cost one
  // cache miss per step, twice for every suspicion every node hears of)
  std::vector<std::uint32_t> position_;
  detail::rank_counts alive_by_key_;  // over by_key_, valid when counted_
  detail::rank_counts live_by_key_;   // the same for live (alive or suspect) members
  bool counted_ = false;
};

class membership {
 public:
  explicit membership(membership_config cfg);

  // Arms the first timers and sends join push-pulls to the seeds.
  void start(time_us now_us, membership_sink& out);

  // A message from `from` (authenticated by the transport). Malformed or over-bound content is
  // counted and dropped; nothing here throws or grows without bound.
  void on_message(const node_key& from, const swim::message& msg, time_us now_us,
                  membership_sink& out);

  void on_tick(time_us now_us, membership_sink& out);

  // Announces a graceful leave (a dead update about ourselves); keep ticking briefly so it
  // spreads.
  void leave(time_us now_us, membership_sink& out);

  // Members other than self, with their states (dead and left ones until they are forgotten),
  // in no particular order.
  const member_table& members() const noexcept { return members_; }
  std::size_t alive_count() const noexcept;  // self included
  std::uint64_t incarnation() const noexcept { return incarnation_; }
  const membership_stats& stats() const noexcept { return stats_; }
  // Updates still waiting to be piggybacked (a backlog delays fresh news; see queued_first).
  std::size_t pending_broadcasts() const noexcept { return send_order_.size(); }
  const membership_config& settings() const noexcept { return cfg_; }

 private:
  struct probe_state {
    node_key target;
    std::uint32_t seq = 0;
    time_us indirect_at_us = 0;  // no ack by then: ask k others
    time_us give_up_at_us = 0;   // no ack by then: suspect
    bool indirect_sent = false;
    std::uint32_t nacks_expected = 0;
    std::uint32_t nacks_received = 0;
    bool acked = false;
  };
  struct relay {
    node_key origin;
    std::uint32_t origin_seq = 0;
    time_us nack_at_us = 0;
  };
  struct suspicion {
    node_key id;  // the suspect
    time_us start_us = 0;
    node_key first_accuser;
    std::vector<node_key> confirmations;
    std::uint32_t expected = 0;
    time_us min_us = 0, max_us = 0;
    time_us deadline_us = 0;  // start_us + the current timeout
  };
  // The broadcast queue (memberlist's TransmitLimitedQueue): one pending update per member,
  // sent least-transmitted first and, among equals, newest first, so that fresh news is never
  // stuck behind a backlog. Bounded: when full, the most-transmitted entry goes (push-pull
  // repairs what piggybacking drops). The updates sit in broadcasts_ by slot; send_order_ holds
  // 16-byte entries sorted in sending order (a deque: fresh news goes in at the front, the most
  // sent leaves at the back).
  struct queued {
    std::uint32_t transmits = 0;
    std::uint32_t slot = 0;   // in broadcasts_
    std::uint64_t order = 0;  // larger is newer
    friend bool operator==(const queued&, const queued&) = default;
  };
  struct queued_first {
    bool operator()(const queued& a, const queued& b) const noexcept {
      if (a.transmits != b.transmits) return a.transmits < b.transmits;
      return a.order > b.order;
    }
  };
  struct broadcast {
    member_update update;
    queued place;
  };

  void apply(const member_update& u, const node_key& from, time_us now_us, membership_sink& out);
  void on_alive(const member_update& u, time_us now_us, membership_sink& out);
  void on_suspect(const member_update& u, const node_key& from, time_us now_us,
                  membership_sink& out);
  void on_dead(const member_update& u, const node_key& from, time_us now_us, membership_sink& out);
  void refute(std::uint64_t accused_incarnation);
  void queue(member_update u);
  void unqueue(std::uint32_t slot);
  void drop_broadcast(std::uint32_t slot);
  void insert_in_order(const queued& q);
  std::vector<member_update> piggyback();
  std::vector<member_update> updates_for(const node_key& target);
  std::vector<member_update> full_state();
  void merge(const std::vector<member_update>& rows, const node_key& from, time_us now_us,
             membership_sink& out);

  void start_probe(time_us now_us, membership_sink& out);
  void finish_probe(time_us now_us, membership_sink& out);
  void check_suspicions(time_us now_us, membership_sink& out);
  void check_relays(time_us now_us, membership_sink& out);
  void push_pull_with_random_member(time_us now_us, membership_sink& out);
  void gossip_to_random_members(membership_sink& out);
  void reconnect(time_us now_us, membership_sink& out);
  time_us reconnect_interval() noexcept;
  std::uint32_t find_suspicion(const node_key& id) const;  // detail::key_index::none: none
  void schedule(std::uint32_t at, time_us old_deadline_us);
  void end_suspicion(const node_key& id);
  void forget_old_dead(time_us now_us);
  void forget(member_table::slot s);
  void adjust_awareness(int delta);
  time_us scaled(time_us base) const noexcept;
  time_us push_pull_interval() const noexcept;
  time_us suspicion_timeout(const suspicion& s) const noexcept;
  std::optional<node_key> next_probe_target();
  // Distinct random members but `except`: alive ones, or with `suspects_too` live ones.
  std::vector<node_key> random_members(std::size_t count, const node_key& except,
                                       bool suspects_too);
  destination to(const node_key& id) const;
  member_update self_update() const;
  void emit(membership_event::kind k, const node_key& id, membership_sink& out) const;
  void rearm(time_us now_us, membership_sink& out);

  membership_config cfg_;
  rng rng_;
  std::uint64_t incarnation_ = 0;
  bool leaving_ = false;
  member_table members_;
  // Open suspicions, by slot (free slots in free_suspicions_, which keep their vectors), found
  // by key through a hash index: a big mesh under loss keeps hundreds open at every node, and
  // every node hears of every suspicion and its confirmations and refutation.
  std::vector<suspicion> suspicions_;
  std::vector<std::uint32_t> free_suspicions_;
  detail::key_index suspicion_index_;                                // key -> slot in suspicions_
  std::set<std::pair<time_us, std::uint32_t>> suspicion_deadlines_;  // by slot, earliest first
  // No dead or left member has been gone longer (a lower bound; max: none).
  time_us earliest_gone_us_ = std::numeric_limits<time_us>::max();
  std::vector<broadcast> broadcasts_;  // by slot; free slots in free_broadcasts_
  std::vector<std::uint32_t> free_broadcasts_;
  detail::key_index broadcast_index_;  // key -> slot in broadcasts_
  std::deque<queued> send_order_;      // sorted by queued_first
  std::uint64_t next_order_ = 0;
  // A round: slots, or forgotten_turn + i for forgotten_turns_[i] (see forget()).
  static constexpr member_table::slot forgotten_turn = 0x80000000;
  std::vector<member_table::slot> probe_order_;
  std::vector<node_key> forgotten_turns_;
  std::size_t probe_index_ = 0;
  std::optional<probe_state> probe_;
  std::map<std::uint32_t, relay> relays_;  // by the seq of our relayed ping
  std::uint32_t next_seq_ = 1;
  time_us next_probe_us_ = 0;
  time_us next_push_pull_us_ = 0;
  time_us next_reconnect_us_ = 0;
  time_us alone_backoff_us_ = 0;  // the current re-dial interval while alone (0: not alone)
  time_us next_gossip_us_ = 0;
  time_us armed_for_us_ = -1;  // the earliest timer asked of the driver and not yet due
  membership_stats stats_;
};

}  // namespace mws::gossip
