#include "simulations/batched.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "simulations/detail/assert.hpp"

namespace mws::sim {
namespace detail {

batched_kernel batched_kernel_baseline() noexcept;
#if defined(MWS_SIM_HAVE_V3)
batched_kernel batched_kernel_x86_64_v3() noexcept;
#endif

batched_kernel select_batched_kernel() noexcept {
#if defined(MWS_SIM_HAVE_V3)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return batched_kernel_x86_64_v3();
#endif
  return batched_kernel_baseline();
}

}  // namespace detail

batched_sync::batched_sync(const mixing_matrix& w, std::size_t params, std::size_t block)
    : n_(w.n), params_(params), offsets_(w.offsets), columns_(w.columns) {
  MWS_SIM_ASSERT(n_ >= 1 && params_ >= 1);
  if (block == 0) {
    // About 2 MiB of X per block (the power of two nearest to it, 16..256 values per node): the
    // block and its scratch copy stay in the caches for the neighbour reads, and rows are long
    // enough for whole 16-lane chunks. Measured best on a 32 MiB-L3 EPYC for 10^3..10^5 nodes.
    const double target = static_cast<double>(std::size_t{2} << 20) / (sizeof(float) * n_);
    block = 16;
    while (block < 256 && static_cast<double>(block) * 1.5 < target)
      block *= 2;
  }
  block_ = std::min(block, (params_ + 7) / 8 * 8);
  blocks_ = (params_ + block_ - 1) / block_;
  weights_.reserve(w.weights.size());
  for (double v : w.weights)
    weights_.push_back(static_cast<float>(v));
  x_.assign(blocks_ * block_ * n_, 0.0f);
  y_.assign(static_cast<std::size_t>(n_) * block_, 0.0f);
}

const char* batched_sync::isa() const noexcept {
  return detail::select_batched_kernel().isa;
}

void batched_sync::load(node_id i, std::span<const float> values) {
  MWS_SIM_ASSERT(i < n_ && values.size() == params_);
  for (std::size_t k = 0; k < params_; ++k) {
    const std::size_t b = k / block_;
    x_[(b * n_ + i) * block_ + k % block_] = values[k];
  }
}

void batched_sync::store(node_id i, std::span<float> out) const {
  MWS_SIM_ASSERT(i < n_ && out.size() == params_);
  for (std::size_t k = 0; k < params_; ++k)
    out[k] = value(i, k);
}

float batched_sync::value(node_id i, std::size_t k) const noexcept {
  const std::size_t b = k / block_;
  return x_[(b * n_ + i) * block_ + k % block_];
}

void batched_sync::round() {
  const auto kernel = detail::select_batched_kernel();
  const std::size_t stride = static_cast<std::size_t>(n_) * block_;
  // Each block is mixed into a scratch block that stays in cache and is then copied back, so X
  // is held once (half the memory of a second full copy) while the traffic to memory stays one
  // read and one write of X per round.
  for (std::size_t b = 0; b < blocks_; ++b) {
    float* xb = x_.data() + b * stride;
    kernel.mix_rows(offsets_.data(), columns_.data(), weights_.data(), n_, block_, xb, y_.data());
    std::memcpy(xb, y_.data(), stride * sizeof(float));
  }
}

consensus_stats batched_sync::stats(std::span<const double> mu) const {
  MWS_SIM_ASSERT(mu.size() == params_);
  consensus_stats s;
  double mu_max = 0.0;
  for (double m : mu)
    mu_max = std::max(mu_max, std::abs(m));
  if (mu_max == 0.0) mu_max = 1.0;
  std::vector<double> mean(block_), sum(block_);
  double sq = 0.0, err = 0.0, drift = 0.0;
  for (std::size_t b = 0; b < blocks_; ++b) {
    const float* base = x_.data() + b * n_ * block_;
    const std::size_t width = std::min(block_, params_ - b * block_);
    std::fill(sum.begin(), sum.end(), 0.0);
    for (node_id i = 0; i < n_; ++i)
      for (std::size_t c = 0; c < width; ++c)
        sum[c] += static_cast<double>(base[i * block_ + c]);
    for (std::size_t c = 0; c < width; ++c) {
      mean[c] = sum[c] / n_;
      drift = std::max(drift, std::abs(sum[c] - n_ * mu[b * block_ + c]));
    }
    for (node_id i = 0; i < n_; ++i)
      for (std::size_t c = 0; c < width; ++c) {
        const auto v = static_cast<double>(base[i * block_ + c]);
        sq += (v - mean[c]) * (v - mean[c]);
        err = std::max(err, std::abs(v - mu[b * block_ + c]));
      }
  }
  s.distance_rms = std::sqrt(sq / n_);
  s.max_relative_error = err / mu_max;
  s.mass_drift = drift / (n_ * mu_max);
  return s;
}

}  // namespace mws::sim
