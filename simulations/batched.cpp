#include "simulations/batched.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

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

namespace {

// The rows a row reads lie within its span (largest column minus smallest). Where the typical
// span is narrow (rings, tori: the median row's span of 128 values per node fits in 8 MiB), the
// rows being read stay in cache at any block size, and 128 values per node (512 bytes) ran best
// on a 32 MiB-L3 EPYC for 10^3..10^5 nodes. Where rows read all over X (random graphs), a block
// is sized so that all of it (about 2 MiB, 16..256 values per node) stays in the caches.
std::size_t pick_block(const mixing_matrix& w) {
  std::vector<node_id> spans(w.n);
  for (node_id i = 0; i < w.n; ++i)
    spans[i] = w.columns[w.offsets[i + 1] - 1] - w.columns[w.offsets[i]];
  std::nth_element(spans.begin(), spans.begin() + w.n / 2, spans.end());
  constexpr std::size_t narrow = 128;
  if (static_cast<double>(spans[w.n / 2]) * narrow * sizeof(float) <= 8.0 * (1 << 20))
    return narrow;
  const double target = static_cast<double>(std::size_t{2} << 20) / (sizeof(float) * w.n);
  std::size_t block = 16;
  while (block < 256 && static_cast<double>(block) * 1.5 < target)
    block *= 2;
  return block;
}

}  // namespace

batched_sync::batched_sync(const mixing_matrix& w, std::size_t params, std::size_t block)
    : n_(w.n), params_(params), offsets_(w.offsets), columns_(w.columns) {
  MWS_SIM_ASSERT(n_ >= 1 && params_ >= 1);
  if (block == 0) block = pick_block(w);
  block_ = std::min(block, (params_ + 7) / 8 * 8);
  blocks_ = (params_ + block_ - 1) / block_;
  weights_.reserve(w.weights.size());
  for (double v : w.weights)
    weights_.push_back(static_cast<float>(v));
  // One slot per block plus a spare that receives the next block's output.
  // The slots start on a 64-byte boundary, which streaming stores need.
  storage_.assign((blocks_ + 1) * block_ * n_ + 16, 0.0f);
  const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
  first_ = (64 - address % 64) % 64 / sizeof(float);
  slot_.resize(blocks_);
  for (std::size_t b = 0; b < blocks_; ++b)
    slot_[b] = b;
  spare_ = blocks_;
}

const char* batched_sync::isa() const noexcept {
  return detail::select_batched_kernel().isa;
}

void batched_sync::load(node_id i, std::span<const float> values) {
  MWS_SIM_ASSERT(i < n_ && values.size() == params_);
  for (std::size_t k = 0; k < params_; ++k) {
    slot_data(slot_[k / block_])[i * block_ + k % block_] = values[k];
  }
}

void batched_sync::store(node_id i, std::span<float> out) const {
  MWS_SIM_ASSERT(i < n_ && out.size() == params_);
  for (std::size_t k = 0; k < params_; ++k)
    out[k] = value(i, k);
}

float batched_sync::value(node_id i, std::size_t k) const noexcept {
  return slot_data(slot_[k / block_])[i * block_ + k % block_];
}

void batched_sync::round() {
  const auto kernel = detail::select_batched_kernel();
  // Each block is mixed into the spare slot, whose old block then becomes the spare: X is held
  // once plus one block, and a round reads and writes X once, with no copy back.
  for (std::size_t b = 0; b < blocks_; ++b) {
    kernel.mix_rows(offsets_.data(), columns_.data(), weights_.data(), n_, block_,
                    slot_data(slot_[b]), slot_data(spare_));
    std::swap(slot_[b], spare_);
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
    const float* base = slot_data(slot_[b]);
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
