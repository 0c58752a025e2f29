// The workloads of a scenario: initial values, local updates (tracking), and the synthetic
// decentralised-SGD problems (least squares, logistic regression) with data that differs per
// node. Deterministic from the rng it is built with; no libm call decides a value that reaches
// a node (deterministic_exp), so traces match across platforms.
#pragma once

#include <span>
#include <vector>

#include "simulations/rng.hpp"
#include "simulations/scenario.hpp"

namespace mws::sim::detail {

class workload {
 public:
  workload(const workload_spec& spec, node_id nodes, std::size_t params, rng random);

  bool has_updates() const noexcept { return spec_.kind != workload_kind::averaging; }
  bool has_loss() const noexcept { return spec_.kind == workload_kind::sgd; }

  void initial(node_id i, std::span<float> x);
  // The local update of node i whose estimate is z and weight w (x += out).
  void update(node_id i, std::span<const double> z, double w, std::span<float> out);
  // sgd: the global objective (1/n) sum_i f_i(z).
  double loss(std::span<const double> z) const;

 private:
  double margin(node_id i, std::size_t sample, std::span<const double> z) const;

  workload_spec spec_;
  node_id n_;
  std::size_t p_;
  rng random_;
  std::vector<float> a_;  // [node][sample][param]
  std::vector<float> b_;  // [node][sample]: target (least squares) or label 0/1 (logistic)
};

}  // namespace mws::sim::detail
