// A simulation scenario: everything that determines a run, so that (scenario, seed, build)
// replays bit for bit. apps/mws-sim fills it from flags and TOML; tests and mws-bench fill it
// in code. validate() is the single place that turns operator mistakes into clear errors.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "gossip/types.hpp"
#include "gpu/backend.hpp"
#include "simulations/error.hpp"
#include "simulations/network.hpp"
#include "simulations/topology.hpp"

namespace mws::sim {

enum class sim_mode : std::uint8_t {
  event,    // every node is a gossip/ state machine; messages cross the virtual network
  batched,  // synchronous rounds X <- W X as sparse products (sync algorithm, no faults)
};

enum class workload_kind : std::uint8_t {
  averaging,  // random initial vectors, nothing else
  tracking,   // plus a local update x += delta on every node every `update_every` steps
  sgd,        // decentralised SGD on a synthetic problem, data differs per node
};

enum class sgd_problem : std::uint8_t { least_squares, logistic };

struct workload_spec {
  workload_kind kind = workload_kind::averaging;
  std::uint32_t update_every = 1;  // steps between local updates (tracking, sgd)
  double update_scale = 0.01;      // tracking: deltas uniform in [-scale, scale]
  sgd_problem problem = sgd_problem::least_squares;
  std::uint32_t samples_per_node = 16;
  double learning_rate = 0.1;
  double heterogeneity = 1.0;  // spread of the per-node optimum around the common one
};

struct scenario {
  std::uint64_t seed = 1;
  sim_mode mode = sim_mode::event;
  topology_spec topology;

  gossip::algorithm algo = gossip::algorithm::sync;
  bool running_sums = true;     // push_sum: false = plain push-sum
  std::uint32_t fanout = 1;     // push_sum
  std::uint32_t staleness = 0;  // sync
  std::uint32_t exact_epochs = 1;
  bool wire_faithful = false;  // event mode: every message through encode -> decode
  // Batched mode: where rows are mixed (the event mode always runs on the CPU). Results are the
  // same bits on every backend.
  gpu::backend_choice device = gpu::backend_choice::automatic;

  std::size_t params = 64;         // model size in f32 values (one tensor)
  std::uint64_t steps = 100;       // steps of virtual time; batched mode: rounds
  std::uint64_t sample_every = 1;  // steps between metric samples (the last step always)
  sim_time_us step_us = 0;         // virtual time per step; 0 = latency + tick (about one round)
  sim_time_us tick_us = 1000;
  sim_time_us timeout_us = 5000;

  network_spec network;
  workload_spec workload;

  bool check_staleness = true;     // sync: count violations of round_i <= round_j + s + 1
  bool full_trace_digest = false;  // hash every tensor byte of every message (slow)
};

std::string_view to_string(sim_mode m) noexcept;
std::string_view to_string(gossip::algorithm a) noexcept;
std::string_view to_string(workload_kind w) noexcept;
result<sim_mode> parse_mode(std::string_view name);
result<gpu::backend_choice> parse_device(std::string_view name);
result<gossip::algorithm> parse_algorithm(std::string_view name);
result<workload_kind> parse_workload(std::string_view name);
result<sgd_problem> parse_problem(std::string_view name);

// Checks every field that an operator can get wrong. `nodes` is the topology's node count.
result<bool> validate(const scenario& s, node_id nodes);

// The step length used when step_us is 0.
sim_time_us effective_step_us(const scenario& s) noexcept;

}  // namespace mws::sim
