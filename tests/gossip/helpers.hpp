// Measurements over a driver's nodes: exact means, estimate errors, mass.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "driver.hpp"

namespace mws::gossip::test {

inline float element(const tensor_set& s, std::size_t t, std::size_t k) {
  const auto v = s[t];
  switch (v.type) {
    case gpu::dtype::f32:
      return static_cast<const float*>(v.data)[k];
    case gpu::dtype::f16:
      return gpu::f16_to_f32(static_cast<const std::uint16_t*>(v.data)[k]);
    case gpu::dtype::bf16:
      return gpu::bf16_to_f32(static_cast<const std::uint16_t*>(v.data)[k]);
  }
  return 0.0f;
}

inline void set_element(tensor_set& s, std::size_t t, std::size_t k, float value) {
  const auto v = s.views()[t];
  switch (v.type) {
    case gpu::dtype::f32:
      static_cast<float*>(v.data)[k] = value;
      break;
    case gpu::dtype::f16:
      static_cast<std::uint16_t*>(v.data)[k] = gpu::f32_to_f16(value);
      break;
    case gpu::dtype::bf16:
      static_cast<std::uint16_t*>(v.data)[k] = gpu::f32_to_bf16(value);
      break;
  }
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
