// Running a scenario: the event mode (gossip/ state machines on the virtual network, driven by
// the discrete-event engine) and the batched mode (sparse synchronous rounds).
//
// event_simulation owns one gossip::averaging_node per simulated node, the CPU gpu::backend
// they mix with, the network model and the engine. It is the driver DESIGN.md section 2
// describes: it feeds messages, ticks and link events in virtual time and carries out the
// nodes' actions. Single-threaded; replays exactly from (scenario, build).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "gossip/node.hpp"
#include "simulations/batched.hpp"
#include "simulations/engine.hpp"
#include "simulations/metrics.hpp"
#include "simulations/network.hpp"
#include "simulations/scenario.hpp"
#include "simulations/theory.hpp"

namespace mws::sim {

using progress_fn = std::function<void(std::uint64_t step, std::uint64_t steps)>;

namespace detail {
class workload;
}

class event_simulation {
 public:
  // Builds the topology (from the scenario's seed) and the nodes; refuses a bad scenario.
  static result<std::unique_ptr<event_simulation>> create(const scenario& s);
  ~event_simulation();

  // Runs all steps (or the remaining ones), sampling the metrics; returns the summary.
  run_summary run(const progress_fn& progress = {});
  // Advances by one step; returns false when all steps are done.
  bool step();

  const std::vector<sample>& series() const noexcept { return series_; }
  const graph& topology() const noexcept { return graph_; }
  const scenario& settings() const noexcept { return scenario_; }
  node_id nodes() const noexcept { return graph_.size(); }
  const gossip::averaging_node& node(node_id i) const noexcept { return *nodes_[i]; }
  // x_i / w_i in double, and x_i itself (the f32 values).
  std::vector<double> estimate(node_id i) const;
  std::vector<float> raw_x(node_id i) const;
  // The exact mean of everything injected so far (initial values and local updates).
  std::vector<double> exact_mean() const;
  std::uint64_t trace_hash() const noexcept { return engine_.trace_hash(); }
  std::uint64_t staleness_violations() const noexcept { return staleness_violations_; }
  const network_counters& net() const noexcept { return net_.counters(); }
  sample measure() const;
  run_summary summary() const;

 private:
  class sink;
  event_simulation(const scenario& s, graph g);
  void dispatch(const event& e);
  void on_send(node_id from, gossip::peer_id to, gossip::message msg);
  void on_timer(node_id who, gossip::time_us at_us);
  void check_staleness(node_id v);
  void notify_partition(std::size_t k, bool up);
  std::uint64_t digest(const gossip::message& m) const;

  struct in_flight {
    gossip::message msg;                              // fast mode
    std::shared_ptr<std::vector<std::uint8_t>> wire;  // wire-faithful mode
  };

  scenario scenario_;
  graph graph_;
  std::unique_ptr<gpu::backend> backend_;
  std::unique_ptr<gpu::stream> stream_;
  gossip::manifest manifest_;
  std::vector<std::vector<gossip::peer_id>> peers_;
  std::vector<std::unique_ptr<gossip::averaging_node>> nodes_;
  std::vector<sim_time_us> last_timer_;
  engine engine_;
  network net_;
  rng net_rng_;
  // Mass in flight, so that the drift counts only mass created or destroyed. Running sums: per
  // directed link, the latest sum sent and the latest one the receiver applied (std::map: the
  // metrics sum in a fixed order). Plain push-sum: the shares scheduled but not yet delivered.
  struct link_sums {
    gossip::message sent;
    gossip::message applied;
    std::uint64_t applied_seq = 0;
  };
  std::map<std::uint64_t, link_sums> running_;
  std::vector<double> plain_x_;
  double plain_w_ = 0.0;
  void account_plain(const gossip::message& m, double sign);
  std::vector<in_flight> flights_;
  std::vector<std::uint64_t> free_flights_;
  std::vector<sim_time_us> arrivals_;
  std::unique_ptr<detail::workload> workload_;
  std::vector<double> injected_x_;
  double injected_w_ = 0.0;
  std::uint64_t step_ = 0;
  sim_time_us step_us_ = 0;
  std::uint64_t staleness_violations_ = 0;
  std::uint64_t refused_ = 0;
  double predicted_ = 0.0;
  std::vector<sample> series_;
  gpu::buffer delta_;
};

// Runs a batched-mode scenario (sync, no faults): one step = one round.
struct batched_output {
  run_summary summary;
  std::vector<sample> series;
};
result<batched_output> run_batched(const scenario& s, const progress_fn& progress = {});

// Either mode, for apps/mws-sim: the summary and the series.
result<batched_output> run_scenario(const scenario& s, const progress_fn& progress = {});

}  // namespace mws::sim
