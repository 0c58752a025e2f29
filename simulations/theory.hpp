// Convergence theory for synchronous averaging: the Metropolis-Hastings mixing matrix of a graph
// and its second-largest eigenvalue modulus (SLEM), which is the predicted asymptotic contraction
// of the consensus distance per round: ||X_t - mean|| ~ slem^t.
#pragma once

#include <cstdint>
#include <vector>

#include "simulations/topology.hpp"

namespace mws::sim {

// A row-stochastic, symmetric sparse matrix in CSR form. Row i lists i itself and its
// neighbours in ascending order of column (so self is not necessarily first).
struct mixing_matrix {
  node_id n = 0;
  std::vector<std::uint32_t> offsets;  // n + 1 entries
  std::vector<node_id> columns;
  std::vector<double> weights;
};

// W_ij = 1 / (1 + max(deg i, deg j)) on edges, W_ii = 1 - sum_j W_ij: symmetric and doubly
// stochastic on any connected graph, so synchronous rounds X <- W X keep the mean.
mixing_matrix metropolis_hastings(const graph& g);

struct spectrum_estimate {
  double slem = 0.0;        // max(|lambda_2|, |lambda_n|)
  double lambda2 = 0.0;     // second-largest eigenvalue
  double lambda_min = 0.0;  // smallest eigenvalue
  bool exact = false;       // dense symmetric eigensolver (true) or power iteration (false)
};

// Dense Eigen::SelfAdjointEigenSolver up to `dense_nodes_max` nodes; above, power iteration on
// W - 11^T/n (slem only, lambda2 / lambda_min left 0), `iterations` steps.
spectrum_estimate mixing_spectrum(const mixing_matrix& w, node_id dense_nodes_max = 2048,
                                  int iterations = 3000);

}  // namespace mws::sim
