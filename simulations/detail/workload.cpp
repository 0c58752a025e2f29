#include "simulations/detail/workload.hpp"

#include <cmath>

#include "simulations/detail/assert.hpp"

namespace mws::sim::detail {

workload::workload(const workload_spec& spec, node_id nodes, std::size_t params, rng random)
    : spec_(spec), n_(nodes), p_(params), random_(random) {
  if (spec_.kind != workload_kind::sgd) return;
  const std::size_t m = spec_.samples_per_node;
  a_.resize(static_cast<std::size_t>(n_) * m * p_);
  b_.resize(static_cast<std::size_t>(n_) * m);
  rng data = random_.fork(0xda7a);
  std::vector<double> common(p_), local(p_);
  for (auto& c : common)
    c = data.normal();
  const double scale = 1.0 / std::sqrt(static_cast<double>(p_));
  for (node_id i = 0; i < n_; ++i) {
    for (std::size_t k = 0; k < p_; ++k)
      local[k] = common[k] + spec_.heterogeneity * data.normal();
    for (std::size_t s = 0; s < m; ++s) {
      float* row = a_.data() + (static_cast<std::size_t>(i) * m + s) * p_;
      double t = 0.0;
      for (std::size_t k = 0; k < p_; ++k) {
        row[k] = static_cast<float>(scale * data.normal());
        t += static_cast<double>(row[k]) * local[k];
      }
      t += 0.01 * data.normal();
      b_[static_cast<std::size_t>(i) * m + s] =
          spec_.problem == sgd_problem::least_squares ? static_cast<float>(t) : (t > 0 ? 1.f : 0.f);
    }
  }
}

void workload::initial(node_id i, std::span<float> x) {
  rng r = random_.fork(0x1000 + i);
  const double offset = spec_.kind == workload_kind::sgd ? -0.5 : 0.0;
  for (auto& v : x)
    v = static_cast<float>(offset + r.uniform01());
}

double workload::margin(node_id i, std::size_t s, std::span<const double> z) const {
  const float* row = a_.data() + (static_cast<std::size_t>(i) * spec_.samples_per_node + s) * p_;
  double t = 0.0;
  for (std::size_t k = 0; k < p_; ++k)
    t += static_cast<double>(row[k]) * z[k];
  return t;
}

void workload::update(node_id i, std::span<const double> z, double w, std::span<float> out) {
  MWS_SIM_ASSERT(z.size() == p_ && out.size() == p_);
  if (spec_.kind == workload_kind::tracking) {
    // The app moves its estimate x/w by delta, so x moves by w * delta (a plain x += delta on a
    // push-sum node whose w is momentarily small would move its estimate by delta / w).
    rng& r = random_;
    for (auto& v : out)
      v = static_cast<float>(w * r.uniform(-spec_.update_scale, spec_.update_scale));
    return;
  }
  const std::size_t m = spec_.samples_per_node;
  std::vector<double> g(p_, 0.0);
  for (std::size_t s = 0; s < m; ++s) {
    const double t = margin(i, s, z);
    const double y = b_[static_cast<std::size_t>(i) * m + s];
    const double r = spec_.problem == sgd_problem::least_squares
                         ? t - y
                         : 1.0 / (1.0 + deterministic_exp(-t)) - y;
    const float* row = a_.data() + (static_cast<std::size_t>(i) * m + s) * p_;
    for (std::size_t k = 0; k < p_; ++k)
      g[k] += r * static_cast<double>(row[k]);
  }
  // x holds w times the estimate, so a step of the estimate by -lr g is a step of x by -lr w g.
  const double step = -spec_.learning_rate * w / static_cast<double>(m);
  for (std::size_t k = 0; k < p_; ++k)
    out[k] = static_cast<float>(step * g[k]);
}

double workload::loss(std::span<const double> z) const {
  if (spec_.kind != workload_kind::sgd) return 0.0;
  const std::size_t m = spec_.samples_per_node;
  double total = 0.0;
  for (node_id i = 0; i < n_; ++i)
    for (std::size_t s = 0; s < m; ++s) {
      const double t = margin(i, s, z);
      const double y = b_[static_cast<std::size_t>(i) * m + s];
      if (spec_.problem == sgd_problem::least_squares) {
        total += 0.5 * (t - y) * (t - y);
      } else {
        // log(1 + e^-t) for y = 1, log(1 + e^t) for y = 0, in the stable form.
        const double u = y > 0.5 ? t : -t;
        total += u > 0 ? std::log1p(std::exp(-u)) : -u + std::log1p(std::exp(u));
      }
    }
  return total / (static_cast<double>(n_) * static_cast<double>(m));
}

}  // namespace mws::sim::detail
