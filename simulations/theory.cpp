#include "simulations/theory.hpp"

#include <algorithm>
#include <cmath>

#include <Eigen/Dense>

#include "simulations/rng.hpp"

namespace mws::sim {

mixing_matrix metropolis_hastings(const graph& g) {
  mixing_matrix w;
  w.n = g.size();
  w.offsets.assign(static_cast<std::size_t>(w.n) + 1, 0);
  w.columns.reserve(g.edge_count() * 2 + w.n);
  w.weights.reserve(g.edge_count() * 2 + w.n);
  for (node_id i = 0; i < w.n; ++i) {
    double off = 0.0;
    std::size_t self_at = 0;
    bool self_placed = false;
    for (node_id j : g.neighbours(i)) {
      if (!self_placed && j > i) {
        self_at = w.columns.size();
        w.columns.push_back(i);
        w.weights.push_back(0.0);
        self_placed = true;
      }
      const double wij = 1.0 / (1.0 + std::max(g.degree(i), g.degree(j)));
      w.columns.push_back(j);
      w.weights.push_back(wij);
      off += wij;
    }
    if (!self_placed) {
      self_at = w.columns.size();
      w.columns.push_back(i);
      w.weights.push_back(0.0);
    }
    w.weights[self_at] = 1.0 - off;
    w.offsets[i + 1] = static_cast<std::uint32_t>(w.columns.size());
  }
  return w;
}

spectrum_estimate mixing_spectrum(const mixing_matrix& w, node_id dense_nodes_max, int iterations) {
  spectrum_estimate out;
  const auto n = static_cast<Eigen::Index>(w.n);
  if (w.n <= dense_nodes_max) {
    Eigen::MatrixXd m = Eigen::MatrixXd::Zero(n, n);
    for (node_id i = 0; i < w.n; ++i)
      for (auto k = w.offsets[i]; k < w.offsets[i + 1]; ++k)
        m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(w.columns[k])) = w.weights[k];
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(m, Eigen::EigenvaluesOnly);
    const auto& ev = solver.eigenvalues();  // ascending; ev(n-1) = 1 for a connected graph
    out.lambda2 = ev(n - 2);
    out.lambda_min = ev(0);
    out.slem = std::max(std::abs(out.lambda2), std::abs(out.lambda_min));
    out.exact = true;
    return out;
  }
  // Power iteration on the deflated operator: the component along the all-ones vector (the
  // eigenvalue 1) is projected out every step, so the iterate aligns with the SLEM eigenvector.
  std::vector<double> v(w.n), next(w.n);
  rng random(0x5eed);
  for (auto& x : v)
    x = random.uniform(-1.0, 1.0);
  double norm_ratio = 0.0;
  for (int it = 0; it < iterations; ++it) {
    double mean = 0.0;
    for (double x : v)
      mean += x;
    mean /= static_cast<double>(w.n);
    double before = 0.0;
    for (auto& x : v) {
      x -= mean;
      before += x * x;
    }
    before = std::sqrt(before);
    for (auto& x : v)
      x /= before;
    double after = 0.0;
    for (node_id i = 0; i < w.n; ++i) {
      double acc = 0.0;
      for (auto k = w.offsets[i]; k < w.offsets[i + 1]; ++k)
        acc += w.weights[k] * v[w.columns[k]];
      next[i] = acc;
      after += acc * acc;
    }
    // Two steps at a time would cancel a +-lambda oscillation; the norm ratio of one step is
    // already the modulus once the iterate lies in the top eigenspace(s) of |lambda|.
    norm_ratio = std::sqrt(after);
    v.swap(next);
  }
  out.slem = norm_ratio;
  out.exact = false;
  return out;
}

}  // namespace mws::sim
