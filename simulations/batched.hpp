// Batched mode: synchronous averaging rounds X <- W X for very large meshes (10^5 nodes and
// more), with no events and no messages. W is a sparse mixing matrix (CSR, f32 weights) and X
// holds every node's parameter vector. This is what the event mode computes for the sync
// algorithm with no faults and staleness 0, at memory speed.
//
// Layout: parameters are cut into blocks of `block` values; a block stores all nodes' slices
// contiguously (node-major inside the block). A round walks the blocks in order, so it streams
// through X once while the nodes' slices of the current block stay in cache for the neighbour
// reads; each block's output goes to a spare slot (written past the caches where the CPU allows)
// and the block's old slot becomes the next spare. Arithmetic follows gpu/backend.hpp's
// weighted_sum: acc = w_0 x_0, then acc = fma(w_k, x_k, acc) over the row in ascending column
// order, in f32, so results repeat bit for bit on every build that runs the same row order.
//
// Single-threaded; not thread-safe.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "simulations/theory.hpp"

namespace mws::sim {

struct consensus_stats {
  double distance_rms = 0.0;        // sqrt(1/n sum_i ||z_i - mean(z)||^2)
  double max_relative_error = 0.0;  // max_{i,k} |z_ik - mu_k| / max_k |mu_k| (mu: exact mean)
  double mass_drift = 0.0;          // max_k |sum_i z_ik - n mu_k| / (n max_k |mu_k|)
};

class batched_sync {
 public:
  // block = 0 picks a block from the rows' spans: 128 values per node where rows read near
  // neighbours (rings, tori), else one that keeps a whole block of X (about 2 MiB) in cache.
  batched_sync(const mixing_matrix& w, std::size_t params, std::size_t block = 0);

  node_id nodes() const noexcept { return n_; }
  std::size_t params() const noexcept { return params_; }
  std::size_t block() const noexcept { return block_; }
  const char* isa() const noexcept;
  std::size_t memory_bytes() const noexcept { return storage_.size() * sizeof(float); }

  void load(node_id i, std::span<const float> values);
  void store(node_id i, std::span<float> out) const;
  float value(node_id i, std::size_t k) const noexcept;

  // One synchronous round of every node.
  void round();

  // Consensus metrics against the exact mean `mu` (params() values).
  consensus_stats stats(std::span<const double> mu) const;

 private:
  node_id n_;
  std::size_t params_;
  std::size_t block_;
  std::size_t blocks_;
  std::vector<std::uint32_t> offsets_;
  std::vector<node_id> columns_;
  std::vector<float> weights_;
  float* slot_data(std::size_t s) noexcept { return storage_.data() + first_ + s * n_ * block_; }
  const float* slot_data(std::size_t s) const noexcept {
    return storage_.data() + first_ + s * n_ * block_;
  }

  std::vector<float> storage_;  // blocks_ + 1 slots of n * block values, from storage_[first_]
  std::size_t first_ = 0;
  std::vector<std::size_t> slot_;  // block b lives in slot slot_[b]
  std::size_t spare_ = 0;          // the slot that receives the next block's output
};

namespace detail {
// y[i*B .. i*B+B) = sum over row i of w_k * x[col_k*B ..), weighted_sum rounding.
using mix_rows_fn = void (*)(const std::uint32_t* offsets, const node_id* columns,
                             const float* weights, node_id n, std::size_t block, const float* x,
                             float* y);
struct batched_kernel {
  const char* isa;
  mix_rows_fn mix_rows;
};
batched_kernel select_batched_kernel() noexcept;
}  // namespace detail

}  // namespace mws::sim
