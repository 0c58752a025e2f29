#include "simulations/membership_study.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace mws::sim {
namespace {

using gossip::membership;
using gossip::membership_event;
using gossip::node_key;

std::string address_of(node_id i) {
  return "n" + std::to_string(i);
}

class study {
 public:
  explicit study(const membership_study_config& c)
      : c_(c),
        net_(c.nodes,
             network_spec{link_model{c.latency, 0.0, std::uint64_t{64} << 20, c.loss_p, 0.0},
                          {},
                          {},
                          {},
                          {}}),
        random_(c.seed),
        joined_at_(c.nodes, -1),
        gone_at_(c.nodes, -1),
        dead_at_(c.nodes, -1),
        alive_(c.nodes, 1),
        started_(c.nodes, 0) {
    for (node_id i = 0; i < c.nodes; ++i) {
      gossip::membership_config m;
      m.self = membership_key(i);
      m.self_address = address_of(i);
      if (i == joiner()) m.seeds = {address_of(0)};
      m.probe_interval_us = c.probe_interval_us;
      m.probe_timeout_us = c.probe_timeout_us;
      m.push_pull_interval_us = c.push_pull_interval_us;
      m.members_max = c.nodes;
      m.seed = c.seed * 1'000'003 + i;
      nodes_.push_back(std::make_unique<membership>(m));
      sinks_.push_back(std::make_unique<sink>(*this, i));
    }
  }

  membership_study_result run() {
    next_report_us_ = c_.progress_interval_us;
    // Bootstrap: every node but the joiner starts knowing the others, as after a long-ago join,
    // each at its own moment within start_spread_us (see start()).
    for (node_id i = 0; i < joiner(); ++i) {
      roster_.members.push_back(
          {membership_key(i), address_of(i), 0, gossip::member_state::alive, {}});
    }
    rng phases = random_.fork(0x5354415254);
    for (node_id i = 0; i < joiner(); ++i) {
      const auto at = static_cast<sim_time_us>(
          phases.below(static_cast<std::uint64_t>(std::max<sim_time_us>(c_.start_spread_us, 1))));
      engine_.schedule({at, 0, event_kind::restart, i, i, 0, 0});
    }
    observing_ = true;
    // Settle: at least settle_us, then until the bootstrap's backlog of broadcasts has drained
    // (a long-running mesh has none), at most 20 times settle_us.
    const sim_time_us settle_max = c_.settle_max_us > 0 ? c_.settle_max_us : 20 * c_.settle_us;
    sim_time_us t = std::min(c_.settle_us, settle_max);
    run_until(t);
    while (t < settle_max && backlog() > 0)
      run_until(t = std::min(t + c_.settle_us / 4, settle_max));
    roster_ = {};

    membership_study_result r;
    const node_id leaver = c_.nodes - 2, crashed = c_.nodes - 3;
    // Join.
    const sim_time_us join_at = t;
    phase_ = "join";
    started_[joiner()] = 1;
    nodes_[joiner()]->start(t, *sinks_[joiner()]);
    run_until(t += c_.phase_us);
    r.join_spread_s = spread(joined_at_, join_at, {joiner()});
    // Leave: announce, then stop a second later.
    const sim_time_us leave_at = t;
    phase_ = "leave";
    nodes_[leaver]->leave(t, *sinks_[leaver]);
    run_until(t + 1'000'000);
    stop(leaver);
    run_until(t += c_.phase_us);
    r.leave_spread_s = spread(gone_at_, leave_at, {leaver});
    // Crash.
    crash_at_ = t;
    phase_ = "crash";
    stop(crashed);
    crashed_ = crashed;
    run_until(t += c_.phase_us);
    r.failure_spread_s = spread(dead_at_, crash_at_, {leaver, crashed});
    r.first_suspicion_s =
        first_suspicion_us_ < 0 ? -1 : static_cast<double>(first_suspicion_us_ - crash_at_) / 1e6;
    r.false_failures = false_failures_;
    r.suspicions = suspicions_;
    r.messages = messages_;
    r.simulated_s = static_cast<double>(t) / 1e6;
    r.messages_per_node_s = static_cast<double>(messages_) / r.simulated_s / c_.nodes;
    r.trace_hash = engine_.trace_hash();
    return r;
  }

 private:
  struct sink final : gossip::membership_sink {
    sink(study& s, node_id i) : s_(s), self_(i) {}
    void send(const gossip::destination& to, gossip::swim::message msg) override {
      s_.send(self_, to, std::move(msg));
    }
    void arm_timer(gossip::time_us at_us) override {
      s_.engine_.schedule({at_us, 0, event_kind::tick, self_, self_, 0, 0});
    }
    void on_event(const membership_event& e) override { s_.observe(self_, e); }
    study& s_;
    node_id self_;
  };

  node_id joiner() const { return c_.nodes - 1; }

  std::size_t backlog() const {
    std::size_t most = 0;
    for (node_id i = 0; i < joiner(); ++i)
      most = std::max(most, nodes_[i]->pending_broadcasts());
    return most;
  }

  void send(node_id from, const gossip::destination& to, gossip::swim::message msg) {
    const node_id dst =
        to.id ? membership_index(*to.id) : static_cast<node_id>(std::stoul(to.address.substr(1)));
    if (dst >= c_.nodes) return;
    ++messages_;
    arrivals_.clear();
    net_.send(engine_.now_us(), from, dst, 64, random_, arrivals_);
    for (sim_time_us at : arrivals_) {
      const std::uint64_t slot = store(msg);
      engine_.schedule({at, 0, event_kind::deliver, from, dst, msg.index(), slot});
    }
  }

  std::uint64_t store(const gossip::swim::message& m) {
    if (!free_.empty()) {
      const std::uint64_t slot = free_.back();
      free_.pop_back();
      store_[slot] = m;
      return slot;
    }
    store_.push_back(m);
    return store_.size() - 1;
  }

  // Runs to t, stopping at each multiple of the progress interval to report.
  void run_until(sim_time_us t) {
    if (c_.on_progress && c_.progress_interval_us > 0) {
      for (; next_report_us_ <= t; next_report_us_ += c_.progress_interval_us) {
        step(next_report_us_);
        c_.on_progress({phase_, static_cast<double>(next_report_us_) / 1e6, engine_.dispatched(),
                        suspicions_, messages_, false_failures_, backlog()});
      }
    }
    step(t);
  }

  void step(sim_time_us t) {
    engine_.run_until(t, [&](const event& e) {
      const bool up = started_[e.dst] && !net_.down(e.dst);
      if (e.kind == event_kind::deliver) {
        const gossip::swim::message msg = std::move(*store_[e.arg]);
        store_[e.arg].reset();
        free_.push_back(e.arg);
        if (up) nodes_[e.dst]->on_message(membership_key(e.src), msg, e.at_us, *sinks_[e.dst]);
      } else if (e.kind == event_kind::tick && up) {
        nodes_[e.dst]->on_tick(e.at_us, *sinks_[e.dst]);
      } else if (e.kind == event_kind::restart) {
        start(e.dst, e.at_us);
      }
    });
  }

  // A bootstrap node starts and learns the roster (as if in a push-pull reply). Nodes started
  // together would keep their timers in step, and every full push-pull would then go out at
  // the same instant: 10,000 tables of 10,000 rows (about 11 GB) in flight at once.
  void start(node_id i, sim_time_us now) {
    started_[i] = 1;
    nodes_[i]->start(now, *sinks_[i]);
    nodes_[i]->on_message(membership_key(i == 0 ? 1 : 0), roster_, now, *sinks_[i]);
  }

  void stop(node_id n) {
    net_.set_down(n, true);
    alive_[n] = 0;
  }

  void observe(node_id observer, const membership_event& e) {
    if (!observing_) return;
    const node_id subject = membership_index(e.id);
    const sim_time_us now = engine_.now_us();
    switch (e.what) {
      case membership_event::kind::joined:
        if (subject == joiner() && joined_at_[observer] < 0) joined_at_[observer] = now;
        break;
      case membership_event::kind::suspected:
        ++suspicions_;
        if (crashed_ && subject == *crashed_ && first_suspicion_us_ < 0) first_suspicion_us_ = now;
        break;
      case membership_event::kind::left:
        if (gone_at_[observer] < 0) gone_at_[observer] = now;
        break;
      case membership_event::kind::failed:
        if (alive_[subject]) {
          ++false_failures_;
        } else if (crashed_ && subject == *crashed_) {
          if (dead_at_[observer] < 0) dead_at_[observer] = now;
        } else if (gone_at_[observer] < 0) {
          gone_at_[observer] = now;  // missed the leave, then found it gone: still gone
        }
        break;
      case membership_event::kind::alive_again:
        break;
    }
  }

  // Seconds from `from` until `reach` of the live observers (excluding `subjects`) recorded a
  // time in `at`; -1 when they did not within the phase.
  double spread(const std::vector<sim_time_us>& at, sim_time_us from,
                std::vector<node_id> subjects) const {
    std::vector<sim_time_us> times;
    std::size_t observers = 0;
    for (node_id i = 0; i < c_.nodes; ++i) {
      if (!alive_[i] || std::find(subjects.begin(), subjects.end(), i) != subjects.end()) continue;
      ++observers;
      if (at[i] >= from) times.push_back(at[i]);
    }
    const auto needed =
        static_cast<std::size_t>(std::ceil(c_.reach * static_cast<double>(observers)));
    if (needed == 0 || times.size() < needed) return -1;
    std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(needed - 1),
                     times.end());
    return static_cast<double>(times[needed - 1] - from) / 1e6;
  }

  membership_study_config c_;
  engine engine_;
  network net_;
  rng random_;
  std::vector<std::unique_ptr<membership>> nodes_;
  std::vector<std::unique_ptr<sink>> sinks_;
  std::vector<std::optional<gossip::swim::message>> store_;
  std::vector<std::uint64_t> free_;
  std::vector<sim_time_us> arrivals_;
  std::vector<sim_time_us> joined_at_, gone_at_, dead_at_;
  std::vector<char> alive_;
  std::vector<char> started_;                        // messages to a node not started yet are lost
  gossip::swim::push_pull roster_{false, true, {}};  // until the bootstrap is over
  std::optional<node_id> crashed_;
  sim_time_us crash_at_ = 0;
  sim_time_us first_suspicion_us_ = -1;
  std::uint64_t false_failures_ = 0, suspicions_ = 0, messages_ = 0;
  bool observing_ = false;
  const char* phase_ = "settle";
  sim_time_us next_report_us_ = 0;
};

}  // namespace

gossip::node_key membership_key(node_id i) {
  gossip::node_key k;
  for (int b = 0; b < 4; ++b)
    k.bytes[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(i >> (8 * b));
  k.bytes[31] = 0x5a;
  return k;
}

node_id membership_index(const gossip::node_key& k) {
  node_id i = 0;
  for (int b = 3; b >= 0; --b)
    i = (i << 8) | k.bytes[static_cast<std::size_t>(b)];
  return i;
}

membership_study_result run_membership_study(const membership_study_config& config) {
  if (config.nodes < 8) throw std::invalid_argument("the membership study needs at least 8 nodes");
  if (!(config.loss_p >= 0.0 && config.loss_p <= 1.0))
    throw std::invalid_argument("loss must be in [0, 1]");
  if (!(config.reach > 0.0 && config.reach <= 1.0))
    throw std::invalid_argument("reach must be in (0, 1]");
  if (config.start_spread_us < 0) throw std::invalid_argument("the start spread must be >= 0");
  if (config.settle_us <= 0 || config.settle_max_us < 0 || config.phase_us <= 0)
    throw std::invalid_argument("the settle and phase times must be > 0");
  return study(config).run();
}

}  // namespace mws::sim
