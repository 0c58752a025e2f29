// A natural logarithm from exact scaling, +, * and / only, so that it rounds the same on every
// platform and standard library (libm's log may differ in the last bit, which would change
// timer deadlines and so the trace of a simulation).
#pragma once

#include <cmath>

namespace mws::gossip::detail {

// ln(x) for finite x > 0, relative error below 1e-15.
inline double deterministic_log(double x) noexcept {
  int e = 0;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1): exact
  if (m < 0.70710678118654752) {
    m *= 2.0;
    --e;
  }
  // ln(m) = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.172.
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = t * t;
  double term = t, sum = 0.0;
  for (int k = 1; k <= 41; k += 2) {
    sum += term / k;
    term *= t2;
  }
  return 2.0 * sum + e * 0.69314718055994531;
}

}  // namespace mws::gossip::detail
