// What a run records at every step, and the CSV / JSON forms that scripts/plot_convergence.py
// reads. Columns are fixed and documented here; a column that does not apply to the run's
// algorithm is 0.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "simulations/engine.hpp"

namespace mws::sim {

struct sample {
  std::uint64_t step = 0;
  sim_time_us time_us = 0;
  double round_mean = 0.0;           // sync / exact: mean completed rounds; batched: rounds
  double distance_rms = 0.0;         // RMS over nodes of ||x_i/w_i - mean of estimates||
  double max_relative_error = 0.0;   // max_{i,k} |x_ik/w_i - mu_k| / max_k |mu_k|
  double mass_drift_x = 0.0;         // max_k |sum_i x_ik - injected_k| / max_k |injected_k|
  double mass_drift_w = 0.0;         // |sum_i w_i - injected w| / injected w
  std::uint64_t messages = 0;        // sent so far
  std::uint64_t bytes = 0;           // sent so far (wire size)
  std::uint64_t round_gap = 0;       // sync: max over edges of |round_i - round_j|
  std::uint32_t staleness_used = 0;  // sync: max over nodes of max_staleness_used
  double loss = 0.0;                 // sgd: objective at the mean of the estimates
};

struct run_summary {
  std::string mode, algorithm, topology, workload;
  std::uint64_t seed = 0;
  std::uint32_t nodes = 0;
  std::size_t params = 0;
  std::uint64_t steps = 0;
  double predicted_contraction = 0.0;  // SLEM of the MH matrix (sync / batched)
  double measured_contraction = 0.0;   // per round (sync, batched) or per step (others)
  std::string contraction_unit;        // "round" or "step"
  std::string device;                  // batched mode: the backend that mixed, and why
  sample last;
  std::uint64_t trace_hash = 0;
  std::uint64_t events = 0;
  std::uint64_t staleness_violations = 0;
  std::uint64_t refused = 0;  // messages a node refused (on_message errors)
  std::uint64_t lost = 0, duplicated = 0, cut = 0, queue_drops = 0, to_down_node = 0;
  double wall_s = 0.0;  // reporting only, never asserted
};

// Geometric-mean contraction per unit of `x` over the steady part of the series: from the first
// sample after a burn-in (a fifth of the run) to the last sample whose distance is still above
// `floor_ratio` x the first distance (below that, f32 rounding dominates). 0 when the window is
// too short.
double measured_contraction(const std::vector<sample>& series, bool per_round,
                            double floor_ratio = 1e-5);

void write_csv(std::ostream& out, const std::vector<sample>& series);
void write_json(std::ostream& out, const run_summary& summary, const std::vector<sample>& series);
std::string hex64(std::uint64_t v);

}  // namespace mws::sim
