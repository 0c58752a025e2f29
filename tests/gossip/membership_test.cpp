#include "gossip/membership.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "gossip/detail/log.hpp"
#include "gossip/rng.hpp"

namespace mws::gossip {
namespace {

constexpr time_us ms = 1000;
constexpr time_us s = 1000 * ms;

node_key key_of(std::size_t i) {
  node_key k;
  k.bytes[0] = static_cast<std::uint8_t>(i & 0xff);
  k.bytes[1] = static_cast<std::uint8_t>(i >> 8);
  k.bytes[31] = 1;
  return k;
}

std::string address_of(std::size_t i) {
  return "n" + std::to_string(i);
}

// A deterministic network of membership machines: one event queue ordered by (time, sequence),
// uniform latency, loss, partitions and crashes. Mirrors what the simulator does, in miniature.
class swim_mesh {
 public:
  struct options {
    std::size_t nodes = 8;
    std::vector<std::string> seeds = {"n0"};
    double loss = 0.0;
    time_us latency_min_us = 1 * ms, latency_max_us = 5 * ms;
    std::size_t members_max = 65536;
    std::uint64_t seed = 1;
  };

  explicit swim_mesh(options o) : o_(std::move(o)), rng_(o_.seed) {
    for (std::size_t i = 0; i < o_.nodes; ++i) {
      membership_config c;
      c.self = key_of(i);
      c.self_address = address_of(i);
      c.seeds = o_.seeds;
      c.members_max = o_.members_max;
      c.seed = o_.seed * 1000 + i;
      nodes_.push_back(std::make_unique<membership>(c));
      sinks_.push_back(std::make_unique<sink>(*this, i));
      index_[c.self] = i;
    }
  }

  void start_all(time_us at = 0) {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      nodes_[i]->start(at + static_cast<time_us>(i) * 10 * ms, *sinks_[i]);
    now_ = at;
  }

  void run_until(time_us t) {
    while (!queue_.empty() && queue_.top().at <= t) {
      event e = queue_.top();
      queue_.pop();
      now_ = e.at;
      if (crashed_.count(e.node)) continue;
      if (e.msg) {
        nodes_[e.node]->on_message(key_of(e.from), *e.msg, now_, *sinks_[e.node]);
      } else {
        nodes_[e.node]->on_tick(now_, *sinks_[e.node]);
      }
    }
    now_ = t;
  }

  void crash(std::size_t i) { crashed_.insert(i); }
  void partition(std::function<bool(std::size_t, std::size_t)> blocked) {
    blocked_ = std::move(blocked);
  }
  void heal() { blocked_ = nullptr; }

  membership& node(std::size_t i) { return *nodes_[i]; }
  void leave(std::size_t i) { nodes_[i]->leave(now_, *sinks_[i]); }
  std::size_t size() const { return nodes_.size(); }
  time_us now() const { return now_; }

  // The state node i holds about node j (alive for itself).
  member_state view(std::size_t i, std::size_t j) const {
    if (i == j) return member_state::alive;
    const auto& m = nodes_[i]->members();
    auto it = m.find(key_of(j));
    return it == m.end() ? member_state::dead : it->second.state;
  }
  bool knows(std::size_t i, std::size_t j) const {
    return nodes_[i]->members().count(key_of(j)) > 0;
  }

  // Every node not crashed sees every node in `live` alive and every node in `gone` as `state`.
  bool converged(const std::set<std::size_t>& gone = {},
                 member_state state = member_state::dead) const {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (crashed_.count(i) || gone.count(i)) continue;
      for (std::size_t j = 0; j < nodes_.size(); ++j) {
        const member_state want = gone.count(j) ? state : member_state::alive;
        if (view(i, j) != want || (gone.count(j) == 0 && i != j && !knows(i, j))) return false;
      }
    }
    return true;
  }

  std::vector<std::string> log;  // every event, for determinism checks
  std::map<membership_event::kind, std::size_t> event_counts;

 private:
  struct event {
    time_us at;
    std::uint64_t seq;
    std::size_t node;
    std::size_t from;
    std::shared_ptr<swim::message> msg;  // null: a timer
    bool operator>(const event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  struct sink final : membership_sink {
    sink(swim_mesh& m, std::size_t i) : mesh(m), self(i) {}
    void send(const destination& to, swim::message msg) override {
      std::size_t dst;
      if (to.id) {
        dst = mesh.index_.at(*to.id);
      } else {
        dst = std::stoul(to.address.substr(1));
      }
      mesh.deliver(self, dst, std::move(msg));
    }
    void arm_timer(time_us at) override { mesh.push({at, mesh.seq_++, self, self, nullptr}); }
    void on_event(const membership_event& e) override {
      ++mesh.event_counts[e.what];
      mesh.log.push_back(std::to_string(mesh.now_) + " " + std::to_string(self) + " " +
                         std::to_string(static_cast<int>(e.what)) + " " +
                         std::to_string(mesh.index_.at(e.id)));
    }
    swim_mesh& mesh;
    std::size_t self;
  };

  void push(event e) { queue_.push(std::move(e)); }

  void deliver(std::size_t from, std::size_t to, swim::message msg) {
    if (crashed_.count(from) || crashed_.count(to) || (blocked_ && blocked_(from, to))) return;
    if (o_.loss > 0 && rng_.unit() < o_.loss) return;
    const auto span = static_cast<std::uint64_t>(o_.latency_max_us - o_.latency_min_us + 1);
    const time_us latency = o_.latency_min_us + static_cast<time_us>(rng_.below(span));
    push({now_ + latency, seq_++, to, from, std::make_shared<swim::message>(std::move(msg))});
  }

  options o_;
  rng rng_;
  std::vector<std::unique_ptr<membership>> nodes_;
  std::vector<std::unique_ptr<sink>> sinks_;
  std::map<node_key, std::size_t> index_;
  std::priority_queue<event, std::vector<event>, std::greater<>> queue_;
  std::set<std::size_t> crashed_;
  std::function<bool(std::size_t, std::size_t)> blocked_;
  std::uint64_t seq_ = 0;
  time_us now_ = 0;
};

// Runs until `done` holds, in steps of 100 ms, up to `limit`; returns the virtual time it took.
time_us run_until_true(swim_mesh& mesh, time_us limit, const std::function<bool()>& done) {
  const time_us start = mesh.now();
  while (!done()) {
    if (mesh.now() - start > limit) return -1;
    mesh.run_until(mesh.now() + 100 * ms);
  }
  return mesh.now() - start;
}

TEST_CASE("membership: 20 nodes joining through one seed all see each other alive") {
  swim_mesh mesh({.nodes = 20});
  mesh.start_all();
  const time_us took = run_until_true(mesh, 60 * s, [&] { return mesh.converged(); });
  INFO("seed 1, took " << took << " us");
  CHECK(took >= 0);
  CHECK(mesh.event_counts[membership_event::kind::failed] == 0);
  CHECK(mesh.event_counts[membership_event::kind::suspected] == 0);
}

TEST_CASE("membership: a crashed node is declared dead everywhere, and no one else is") {
  swim_mesh mesh({.nodes = 16, .seed = 2});
  mesh.start_all();
  REQUIRE(run_until_true(mesh, 60 * s, [&] { return mesh.converged(); }) >= 0);
  mesh.crash(7);
  const time_us took = run_until_true(mesh, 120 * s, [&] { return mesh.converged({7}); });
  INFO("seed 2, detection took " << took << " us");
  CHECK(took >= 0);
  // Probe period 1 s, suspicion at most 6 x 4 x log10(16) s: detection within a minute.
  CHECK(took <= 60 * s);
  CHECK(mesh.event_counts[membership_event::kind::failed] == 15);
}

TEST_CASE("membership: a falsely suspected node refutes with a higher incarnation") {
  swim_mesh mesh({.nodes = 8, .seed = 3});
  mesh.start_all();
  REQUIRE(run_until_true(mesh, 60 * s, [&] { return mesh.converged(); }) >= 0);
  // Node 1 tells node 0 that node 3 is suspect (as a confused prober would).
  swim::push_pull rumour{false, true, {{key_of(3), "", 0, member_state::suspect, key_of(1)}}};
  struct null_sink final : membership_sink {
    void send(const destination&, swim::message) override {}
    void arm_timer(time_us) override {}
    void on_event(const membership_event&) override {}
  } quiet;
  mesh.node(0).on_message(key_of(1), rumour, mesh.now(), quiet);
  CHECK(mesh.view(0, 3) == member_state::suspect);
  const time_us took = run_until_true(mesh, 30 * s, [&] {
    return mesh.converged() && mesh.node(0).members().at(key_of(3)).incarnation >= 1;
  });
  CHECK(took >= 0);
  CHECK(mesh.node(3).incarnation() >= 1);
  CHECK(mesh.node(3).stats().refutations >= 1);
  CHECK(mesh.event_counts[membership_event::kind::failed] == 0);
}

// Records what one membership machine sends and reports, for tests that drive it by hand.
struct recording_sink final : membership_sink {
  void send(const destination& to, swim::message msg) override {
    sent.emplace_back(to, std::move(msg));
  }
  void arm_timer(time_us) override {}
  void on_event(const membership_event& e) override { events.push_back(e); }
  // Events of kind k about member id.
  std::size_t count(membership_event::kind k, const node_key& id) const {
    return static_cast<std::size_t>(std::count_if(
        events.begin(), events.end(), [&](const auto& e) { return e.what == k && e.id == id; }));
  }
  std::vector<std::pair<destination, swim::message>> sent;
  std::vector<membership_event> events;
};

// A lone node 0 that knows nodes 1..n alive (as from a push-pull reply), started at time 0. Its
// probes go unanswered, so it comes to suspect members of its own accord, at its own pace.
membership node_knowing(std::size_t n, recording_sink& out) {
  membership_config c;
  c.self = key_of(0);
  c.self_address = address_of(0);
  c.seed = 77;
  membership m(c);
  m.start(0, out);
  swim::push_pull table{false, true, {}};
  for (std::size_t i = 1; i <= n; ++i)
    table.members.push_back({key_of(i), address_of(i), 0, member_state::alive, {}});
  m.on_message(key_of(1), table, 0, out);
  return m;
}

// Regression: gossip went to alive members only, so a suspect heard neither its own suspicion
// (but from the rare ping that carried it) nor any other news while suspected. In a 300-node
// study at 10% loss that turned suspicions into false deaths: a node suspected for a few seconds
// missed the whole spread of another member's refutation, then declared that member dead.
TEST_CASE("membership: gossip reaches suspected members too, and tells them they are suspected") {
  recording_sink out;
  membership m = node_knowing(3, out);
  m.on_message(key_of(1),
               swim::push_pull{false, true, {{key_of(3), "", 0, member_state::suspect, key_of(1)}}},
               1 * ms, out);
  REQUIRE(m.members().at(key_of(3)).state == member_state::suspect);
  out.sent.clear();
  m.on_tick(m.settings().gossip_interval_us, out);  // gossip to 3 of the 3 live members
  std::set<node_key> gossiped;
  bool told_suspect = false;
  for (const auto& [to, msg] : out.sent) {
    const auto* g = std::get_if<swim::gossip>(&msg);
    if (g == nullptr) continue;
    gossiped.insert(*to.id);
    if (*to.id != key_of(3)) continue;
    for (const auto& u : g->updates)
      told_suspect |= u.id == key_of(3) && u.state == member_state::suspect;
  }
  CHECK(gossiped == std::set<node_key>{key_of(1), key_of(2), key_of(3)});
  CHECK(told_suspect);
}

// Regression: a suspicion at a newer incarnation than the one suspected raised the incarnation
// of the open suspicion and kept its old timer, so the member was declared dead at its current
// incarnation (which every node accepts) without the time to refute. In a 300-node study at 10%
// loss such deaths spread to hundreds of observers each.
TEST_CASE("membership: a suspicion at a newer incarnation restarts the suspicion timer") {
  recording_sink out;
  membership m = node_knowing(5, out);
  const node_key x = key_of(3);
  m.on_message(key_of(1), swim::gossip{{{x, "", 0, member_state::suspect, key_of(1)}}}, 0, out);
  REQUIRE(m.members().at(x).state == member_state::suspect);
  // 6 members: the suspicion lasts from 4 s (all confirmations) to 24 s (none). Node 3 refutes
  // (a refutation this node misses); node 2 then suspects incarnation 1.
  m.on_message(key_of(2), swim::gossip{{{x, "", 1, member_state::suspect, key_of(2)}}}, 20 * s,
               out);
  CHECK(m.members().at(x).state == member_state::suspect);
  CHECK(m.members().at(x).incarnation == 1);
  for (time_us t = 20 * s; t <= 30 * s; t += 100 * ms)
    m.on_tick(t, out);
  // Past the old deadline: still suspect, with incarnation 1's own timeout running.
  CHECK(m.members().at(x).state == member_state::suspect);
  CHECK(out.count(membership_event::kind::failed, x) == 0);
  CHECK(out.count(membership_event::kind::suspected, x) == 1);
  // An alive row at the suspected incarnation does not refute it; a newer one does.
  m.on_message(x, swim::gossip{{{x, "n3", 1, member_state::alive, {}}}}, 30 * s, out);
  CHECK(m.members().at(x).state == member_state::suspect);
  m.on_message(x, swim::gossip{{{x, "n3", 2, member_state::alive, {}}}}, 30 * s, out);
  CHECK(m.members().at(x).state == member_state::alive);
  CHECK(out.count(membership_event::kind::alive_again, x) == 1);
}

TEST_CASE("membership: an unrefuted suspicion at a newer incarnation ends in death at it") {
  recording_sink out;
  membership m = node_knowing(5, out);
  const node_key x = key_of(3);
  m.on_message(key_of(1), swim::gossip{{{x, "", 0, member_state::suspect, key_of(1)}}}, 0, out);
  m.on_message(key_of(2), swim::gossip{{{x, "", 1, member_state::suspect, key_of(2)}}}, 20 * s,
               out);
  for (time_us t = 20 * s; t <= 50 * s; t += 100 * ms)
    m.on_tick(t, out);
  // 20 s + at most 24 s.
  CHECK(m.members().at(x).state == member_state::dead);
  CHECK(m.members().at(x).incarnation == 1);
  CHECK(out.count(membership_event::kind::failed, x) == 1);
}

TEST_CASE("membership: a node whose seed starts after it joins within a few probe intervals") {
  swim_mesh mesh({.nodes = 2});
  // n1 starts first and its first push-pull to the seed n0 finds nobody; n0 comes up 50 ms later.
  mesh.partition([&](std::size_t, std::size_t) { return mesh.now() < 50 * ms; });
  mesh.start_all();
  const time_us took = run_until_true(mesh, 60 * s, [&] { return mesh.converged(); });
  INFO("took " << took << " us");
  CHECK(took >= 0);
  CHECK(took <= 3 * s);  // the reconnect interval is 10 s; alone, a node re-dials every 1 s
}

TEST_CASE("membership: both sides of a healed partition find each other again") {
  swim_mesh mesh({.nodes = 12, .seed = 4});
  mesh.start_all();
  REQUIRE(run_until_true(mesh, 60 * s, [&] { return mesh.converged(); }) >= 0);
  auto side = [](std::size_t i) { return i < 6; };
  mesh.partition([&](std::size_t a, std::size_t b) { return side(a) != side(b); });
  mesh.run_until(mesh.now() + 180 * s);
  // Each side has declared the other dead.
  CHECK(mesh.view(0, 11) == member_state::dead);
  CHECK(mesh.view(11, 0) == member_state::dead);
  mesh.heal();
  const time_us took = run_until_true(mesh, 120 * s, [&] { return mesh.converged(); });
  INFO("seed 4, healing took " << took << " us");
  CHECK(took >= 0);
}

TEST_CASE("membership: 10% message loss causes no false deaths (indirect probes, Lifeguard)") {
  swim_mesh mesh({.nodes = 24, .loss = 0.10, .seed = 5});
  mesh.start_all();
  REQUIRE(run_until_true(mesh, 90 * s, [&] { return mesh.converged(); }) >= 0);
  mesh.run_until(mesh.now() + 300 * s);
  CHECK(mesh.event_counts[membership_event::kind::failed] == 0);
  // Suspicions come and go under loss; none may have turned into a death.
  std::size_t not_live = 0;
  for (std::size_t i = 0; i < mesh.size(); ++i) {
    for (std::size_t j = 0; j < mesh.size(); ++j) {
      const member_state v = mesh.view(i, j);
      not_live += v != member_state::alive && v != member_state::suspect;
    }
  }
  CHECK(not_live == 0);
  CHECK(mesh.event_counts[membership_event::kind::suspected] > 0);  // the loss did bite
}

TEST_CASE("membership: a graceful leave shows as left, not failed") {
  swim_mesh mesh({.nodes = 6, .seed = 6});
  mesh.start_all();
  REQUIRE(run_until_true(mesh, 60 * s, [&] { return mesh.converged(); }) >= 0);
  mesh.leave(5);
  mesh.run_until(mesh.now() + 2 * s);
  mesh.crash(5);  // it stops after announcing
  const time_us took =
      run_until_true(mesh, 30 * s, [&] { return mesh.converged({5}, member_state::left); });
  CHECK(took >= 0);
  CHECK(mesh.event_counts[membership_event::kind::left] == 5);
  CHECK(mesh.event_counts[membership_event::kind::failed] == 0);
}

TEST_CASE("membership: tables, piggybacks and relays stay within their bounds") {
  swim_mesh mesh({.nodes = 10, .members_max = 4, .seed = 7});
  mesh.start_all();
  mesh.run_until(30 * s);
  for (std::size_t i = 0; i < mesh.size(); ++i)
    CHECK(mesh.node(i).members().size() <= 4);
  CHECK(mesh.node(0).stats().refused > 0);

  membership_config lone_config;
  lone_config.self = key_of(0);
  lone_config.self_address = "n0";
  lone_config.seed = 9;
  membership lone(lone_config);
  struct counting_sink final : membership_sink {
    void send(const destination&, swim::message) override { ++sent; }
    void arm_timer(time_us) override {}
    void on_event(const membership_event&) override { ++events; }
    int sent = 0, events = 0;
  } out;
  lone.start(0, out);
  // Too many piggybacked updates: the whole message is refused, nothing is answered.
  swim::ping flood{
      1, key_of(0),
      std::vector<member_update>(17, member_update{key_of(9), "n9", 0, member_state::alive, {}})};
  lone.on_message(key_of(1), flood, 1, out);
  CHECK(out.sent == 0);
  CHECK(lone.members().empty());
  // A ping meant for another node is refused too.
  lone.on_message(key_of(1), swim::ping{2, key_of(5), {}}, 2, out);
  CHECK(out.sent == 0);
  // An address longer than the bound is refused row by row.
  lone.on_message(
      key_of(1),
      swim::push_pull{
          false, true, {{key_of(9), std::string(300, 'x'), 0, member_state::alive, {}}}},
      3, out);
  CHECK(lone.members().empty());
  CHECK(lone.stats().refused == 3);
  // A valid ping is answered with an ack.
  lone.on_message(key_of(1), swim::ping{3, key_of(0), {}}, 4, out);
  CHECK(out.sent == 1);
}

TEST_CASE("membership: the same seed replays the same events; another seed differs") {
  auto run = [](std::uint64_t seed) {
    swim_mesh mesh({.nodes = 10, .loss = 0.05, .seed = seed});
    mesh.start_all();
    mesh.run_until(20 * s);
    mesh.crash(4);
    mesh.run_until(80 * s);
    return mesh.log;
  };
  CHECK(run(11) == run(11));
  CHECK(run(11) != run(12));
}

TEST_CASE("member_table: rows, key order, alive and live ranks agree with a sorted map") {
  // Random inserts, state changes, address changes and erasures, checked against std::map after
  // each step: the table must read like the map it replaced, and its ranks must follow key order.
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    CAPTURE(seed);
    rng random(seed);
    member_table table(seed);
    std::map<node_key, member_info> model;
    auto random_key = [&] { return key_of(random.below(300)); };
    for (std::size_t step = 0; step < 4000; ++step) {
      const node_key id = random_key();
      const auto slot = table.slot_of(id);
      REQUIRE((slot == member_table::none) == (model.count(id) == 0));
      const std::uint64_t what = random.below(10);
      if (slot == member_table::none) {
        const std::string address = std::string(random.below(40), 'a') + address_of(step);
        const auto now = static_cast<time_us>(step);
        table.insert(id, address, 1, now);
        model[id] = {address, 1, member_state::alive, now, {}};
      } else if (what < 5) {
        const auto state = static_cast<member_state>(random.below(4));
        const node_key accuser = state == member_state::alive ? node_key{} : random_key();
        const auto now = static_cast<time_us>(step);
        table.set_status(slot, state, model[id].incarnation + 1, now, accuser);
        model[id] = {model[id].address, model[id].incarnation + 1, state, now, accuser};
      } else if (what < 7) {
        const std::string address = address_of(random.below(1000));
        table.set_address(slot, address);
        model[id].address = address;
      } else {
        table.erase(slot);
        model.erase(id);
      }
      REQUIRE(table.size() == model.size());
      if (step % 50 != 0) continue;
      std::vector<node_key> alive_by_key, live_by_key;
      for (const auto& [k, m] : model) {
        const member_info got = table.at(k);
        CHECK(got.address == m.address);
        CHECK(got.incarnation == m.incarnation);
        CHECK(got.state == m.state);
        CHECK(got.since_us == m.since_us);
        CHECK(got.accuser == m.accuser);
        if (m.state == member_state::alive) alive_by_key.push_back(k);
        if (m.state == member_state::alive || m.state == member_state::suspect)
          live_by_key.push_back(k);
      }
      std::size_t iterated = 0;
      for (const auto& [k, m] : table)
        iterated += model.count(k);
      CHECK(iterated == model.size());
      REQUIRE(table.alive() == alive_by_key.size());
      for (std::size_t r = 0; r < alive_by_key.size(); ++r) {
        CHECK(table.id(table.nth(r, false)) == alive_by_key[r]);
        CHECK(table.rank_before(table.slot_of(alive_by_key[r]), false) == r);
      }
      REQUIRE(table.live() == live_by_key.size());
      for (std::size_t r = 0; r < live_by_key.size(); ++r) {
        CHECK(table.id(table.nth(r, true)) == live_by_key[r]);
        CHECK(table.rank_before(table.slot_of(live_by_key[r]), true) == r);
      }
    }
  }
}

TEST_CASE("rank_counts: counts before a position and finds the k-th set one, across words") {
  // Sizes around the 64-bit words and the Fenwick tree's powers of two, checked against a plain
  // array after each flip.
  for (const std::size_t n : {1u, 63u, 64u, 65u, 127u, 128u, 129u, 700u}) {
    CAPTURE(n);
    rng random(n);
    std::vector<std::uint8_t> flags(n);
    for (auto& f : flags)
      f = random.below(3) != 0;
    detail::rank_counts counts;
    counts.build(flags);
    REQUIRE(counts.size() == n);
    for (std::size_t step = 0; step < 200; ++step) {
      const std::size_t pos = random.below(n);
      flags[pos] = !flags[pos];
      counts.add(pos, flags[pos] != 0);
      std::size_t set = 0;
      for (std::size_t p = 0; p < n; ++p) {
        CHECK(counts.before(p) == set);
        if (flags[p]) {
          CHECK(counts.nth(set) == p);
          ++set;
        }
      }
      CHECK(counts.before(n) == set);
      CHECK(counts.nth(set) == n);  // no k-th: the size
      CHECK(counts.nth(set + 5) == n);
    }
  }
}

TEST_CASE("deterministic_log agrees with std::log to 1e-15") {
  for (double x : {1e-300, 0.001, 0.5, 0.7071, 1.0, 1.5, 2.0, 10.0, 16.0, 1e6, 123456.789, 1e300}) {
    CAPTURE(x);
    CHECK(std::abs(detail::deterministic_log(x) - std::log(x)) <=
          1e-15 * std::max(1.0, std::abs(std::log(x))));
  }
  CHECK(detail::deterministic_log(1.0) == 0.0);
}

}  // namespace
}  // namespace mws::gossip
