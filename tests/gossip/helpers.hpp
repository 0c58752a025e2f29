// Measurements over a driver's nodes: exact means, estimate errors, mass.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "driver.hpp"

namespace mws::gossip::test {

inline float element(const tensor_set& s, std::size_t t, std::size_t k) {
  const auto v = s[t];
  return gpu::load_as_f32(v.data, v.type, k);
}

inline void set_element(tensor_set& s, std::size_t t, std::size_t k, float value) {
  const auto v = s.views()[t];
  gpu::store_from_f32(v.data, v.type, k, value);
}

// Sum over nodes of x (per element of tensor t) and of w.
struct mass {
  std::vector<double> x;
  double w = 0.0;
};

inline mass total_mass(driver& d, std::size_t t = 0) {
  mass m;
  m.x.assign(d.node(0).state().x[t].numel, 0.0);
  for (std::size_t i = 0; i < d.size(); ++i) {
    const auto& s = d.node(i).state();
    for (std::size_t k = 0; k < m.x.size(); ++k)
      m.x[k] += static_cast<double>(element(s.x, t, k));
    m.w += s.w;
  }
  return m;
}

// Largest relative error of any node's estimate x/w against `exact` (per element).
inline double max_relative_error(driver& d, const std::vector<double>& exact, std::size_t t = 0) {
  double worst = 0.0;
  for (std::size_t i = 0; i < d.size(); ++i) {
    const auto& s = d.node(i).state();
    for (std::size_t k = 0; k < exact.size(); ++k) {
      const double est = static_cast<double>(element(s.x, t, k)) / s.w;
      worst = std::max(worst, std::abs(est - exact[k]) / std::abs(exact[k]));
    }
  }
  return worst;
}

inline std::vector<double> ratio(const mass& m) {
  std::vector<double> out(m.x.size());
  for (std::size_t k = 0; k < out.size(); ++k)
    out[k] = m.x[k] / m.w;
  return out;
}

}  // namespace mws::gossip::test
