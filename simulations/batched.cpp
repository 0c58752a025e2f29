#include "simulations/batched.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "simulations/detail/assert.hpp"

namespace mws::sim {
namespace {

// The rows a row reads lie within its span (largest column minus smallest). Where the typical
// span is narrow (rings, tori: the median row's span of 128 values per node fits in 8 MiB), the
// rows being read stay in cache at any block size, and 128 values per node (512 bytes) ran best
// on a 32 MiB-L3 EPYC for 10^3..10^5 nodes. Where rows read all over X (random graphs), a block
// is sized so that all of it (about 2 MiB, 16..256 values per node) stays in the caches.
std::size_t pick_cpu_block(const mixing_matrix& w) {
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

failure backend_failure(const gpu::error_code& ec, const std::string& what) {
  return fail(errc::unsupported, "batched mode: " + what + ": " + ec.message());
}

// Rows copied to the host at a time by stats().
constexpr std::size_t stats_chunk_bytes = std::size_t{16} << 20;

}  // namespace

result<batched_sync> batched_sync::create(gpu::backend& backend, const mixing_matrix& w,
                                          std::size_t params, std::size_t block) {
  MWS_SIM_ASSERT(w.n >= 1 && params >= 1);
  batched_sync b;
  b.backend_ = &backend;
  b.n_ = w.n;
  b.params_ = params;
  if (block == 0) block = backend.name() == "cpu" ? pick_cpu_block(w) : params;
  b.block_ = std::min(block, (params + 7) / 8 * 8);
  b.blocks_ = (params + b.block_ - 1) / b.block_;
  std::vector<float> weights(w.weights.begin(), w.weights.end());  // f64 -> f32
  auto rows = backend.upload_rows(w.offsets, w.columns, weights);
  if (!rows) return backend_failure(rows.error(), "the mixing matrix");
  b.w_ = std::move(*rows);
  auto stream = backend.make_stream();
  if (!stream) return backend_failure(stream.error(), "a stream");
  b.stream_ = std::move(*stream);
  // One slot per block plus a spare that receives the next block's output.
  const std::size_t slot_values = std::size_t{b.n_} * b.block_;
  auto storage =
      backend.allocate(gpu::dtype::f32, (b.blocks_ + 1) * slot_values, gpu::memory_space::device);
  if (!storage) return backend_failure(storage.error(), "memory for the nodes' values");
  b.storage_ = std::move(*storage);
  const std::vector<float> zeros(std::min(b.storage_.numel(), stats_chunk_bytes / sizeof(float)));
  for (std::size_t at = 0; at < b.storage_.numel(); at += zeros.size()) {
    const std::size_t count = std::min(zeros.size(), b.storage_.numel() - at);
    const gpu::const_tensor_view from(zeros.data(), count, gpu::dtype::f32,
                                      gpu::memory_space::host);
    if (auto ec = backend.copy(*b.stream_, b.storage_.view().slice(at, count), from))
      return backend_failure(ec, "clearing the nodes' values");
  }
  if (auto ec = b.stream_->synchronize()) return backend_failure(ec, "clearing the nodes' values");
  b.slot_.resize(b.blocks_);
  for (std::size_t k = 0; k < b.blocks_; ++k)
    b.slot_[k] = k;
  b.spare_ = b.blocks_;
  return b;
}

gpu::tensor_view batched_sync::slot_view(std::size_t s) const noexcept {
  const std::size_t values = std::size_t{n_} * block_;
  // The views are handed to the backend by const members too (copies out), never written there.
  auto all = const_cast<gpu::buffer&>(storage_).view();
  return all.slice(s * values, values);
}

void batched_sync::copy_segment(std::size_t b, node_id i, std::size_t k, std::span<float> host,
                                bool to_device) const {
  const auto device = slot_view(slot_[b]).slice(std::size_t{i} * block_ + k, host.size());
  const gpu::tensor_view there{host.data(), host.size(), gpu::dtype::f32, gpu::memory_space::host};
  const auto ec =
      to_device ? backend_->copy(*stream_, device, there) : backend_->copy(*stream_, there, device);
  MWS_SIM_ASSERT(!ec);
  MWS_SIM_ASSERT(!stream_->synchronize());
}

void batched_sync::load(node_id i, std::span<const float> values) {
  MWS_SIM_ASSERT(i < n_ && values.size() == params_);
  std::vector<float> segment(block_);
  for (std::size_t b = 0; b < blocks_; ++b) {
    const std::size_t width = std::min(block_, params_ - b * block_);
    std::copy_n(values.begin() + static_cast<std::ptrdiff_t>(b * block_), width, segment.begin());
    copy_segment(b, i, 0, std::span(segment).first(width), true);
  }
}

void batched_sync::store(node_id i, std::span<float> out) const {
  MWS_SIM_ASSERT(i < n_ && out.size() == params_);
  for (std::size_t b = 0; b < blocks_; ++b)
    copy_segment(b, i, 0, out.subspan(b * block_, std::min(block_, params_ - b * block_)), false);
}

float batched_sync::value(node_id i, std::size_t k) const {
  MWS_SIM_ASSERT(i < n_ && k < params_);
  float v = 0.0f;
  copy_segment(k / block_, i, k % block_, std::span(&v, 1), false);
  return v;
}

gpu::error_code batched_sync::round() {
  for (std::size_t b = 0; b < blocks_; ++b) {
    if (auto ec = backend_->mix_rows(*stream_, *w_, block_, slot_view(slot_[b]), slot_view(spare_)))
      return ec;
    std::swap(slot_[b], spare_);
  }
  return stream_->synchronize();
}

consensus_stats batched_sync::stats(std::span<const double> mu) const {
  MWS_SIM_ASSERT(mu.size() == params_);
  consensus_stats s;
  double mu_max = 0.0;
  for (double m : mu)
    mu_max = std::max(mu_max, std::abs(m));
  if (mu_max == 0.0) mu_max = 1.0;
  // Sums per parameter, over nodes in order, then over parameters in order: the same at any
  // block size, so the metrics are the same bits on every backend.
  std::vector<double> mean(block_), sum(block_), sq(params_, 0.0);
  double err = 0.0, drift = 0.0;
  // Visits block b's rows a chunk at a time, copied to the host.
  const node_id chunk_rows =
      static_cast<node_id>(std::max<std::size_t>(1, stats_chunk_bytes / (block_ * sizeof(float))));
  std::vector<float> rows(std::min<std::size_t>(chunk_rows, n_) * block_);
  auto each_row = [&](std::size_t b, auto&& visit) {
    for (node_id first = 0; first < n_; first += chunk_rows) {
      const node_id count = std::min<node_id>(chunk_rows, n_ - first);
      copy_segment(b, first, 0, std::span(rows).first(std::size_t{count} * block_), false);
      for (node_id r = 0; r < count; ++r)
        visit(rows.data() + std::size_t{r} * block_);
    }
  };
  for (std::size_t b = 0; b < blocks_; ++b) {
    const std::size_t width = std::min(block_, params_ - b * block_);
    const double* mu_b = mu.data() + b * block_;
    std::fill(sum.begin(), sum.end(), 0.0);
    each_row(b, [&](const float* row) {
      for (std::size_t c = 0; c < width; ++c)
        sum[c] += static_cast<double>(row[c]);
    });
    for (std::size_t c = 0; c < width; ++c) {
      mean[c] = sum[c] / n_;
      drift = std::max(drift, std::abs(sum[c] - n_ * mu_b[c]));
    }
    each_row(b, [&](const float* row) {
      for (std::size_t c = 0; c < width; ++c) {
        const auto v = static_cast<double>(row[c]);
        sq[b * block_ + c] += (v - mean[c]) * (v - mean[c]);
        err = std::max(err, std::abs(v - mu_b[c]));
      }
    });
  }
  double total = 0.0;
  for (double q : sq)
    total += q;
  s.distance_rms = std::sqrt(total / n_);
  s.max_relative_error = err / mu_max;
  s.mass_drift = drift / (n_ * mu_max);
  return s;
}

}  // namespace mws::sim
