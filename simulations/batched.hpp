// Batched mode: synchronous averaging rounds X <- W X for very large meshes (10^5 nodes and
// more), with no events and no messages. W is a sparse mixing matrix (CSR, f32 weights) and X
// holds every node's parameter vector. This is what the event mode computes for the sync
// algorithm with no faults and staleness 0, at memory speed, on the CPU or on a GPU: the rows
// are mixed by gpu::backend::mix_rows, whose rounding (acc = w_0 x_0, then acc = fma(w_k, x_k,
// acc) over the row in ascending column order, in f32) is the same on every backend, so results
// repeat bit for bit on the CPU and on a GPU, and at any block size.
//
// Layout: parameters are cut into blocks of `block` values; a block stores all nodes' slices
// contiguously (node-major inside the block). A round walks the blocks in order, so it streams
// through X once while the rows of the current block that are being read stay in cache; each
// block's output goes to a spare slot and the block's old slot becomes the next spare. So X is
// held once plus one block. On a GPU a block is a whole row (block = params): X twice.
//
// Single-threaded; not thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "gpu/backend.hpp"
#include "simulations/error.hpp"
#include "simulations/theory.hpp"

namespace mws::sim {

struct consensus_stats {
  double distance_rms = 0.0;        // sqrt(1/n sum_i ||z_i - mean(z)||^2)
  double max_relative_error = 0.0;  // max_{i,k} |z_ik - mu_k| / max_k |mu_k| (mu: exact mean)
  double mass_drift = 0.0;          // max_k |sum_i z_ik - n mu_k| / (n max_k |mu_k|)
};

class batched_sync {
 public:
  // X starts at zero, in `backend`'s device memory; `backend` must outlive the result. block = 0
  // picks one: on a GPU whole rows; on the CPU, from the rows' spans, 128 values per node where
  // rows read near neighbours (rings, tori), else one that keeps a whole block of X (about
  // 2 MiB) in cache. Fails when the backend cannot hold X.
  static result<batched_sync> create(gpu::backend& backend, const mixing_matrix& w,
                                     std::size_t params, std::size_t block = 0);

  node_id nodes() const noexcept { return n_; }
  std::size_t params() const noexcept { return params_; }
  std::size_t block() const noexcept { return block_; }
  std::size_t memory_bytes() const noexcept { return storage_.bytes(); }

  void load(node_id i, std::span<const float> values);
  void store(node_id i, std::span<float> out) const;
  float value(node_id i, std::size_t k) const;

  // One synchronous round of every node; waits until the backend has finished it. An error is
  // the backend's (a device fault): the values are then undefined.
  gpu::error_code round();

  // Consensus metrics against the exact mean `mu` (params() values).
  consensus_stats stats(std::span<const double> mu) const;

 private:
  batched_sync() = default;
  gpu::tensor_view slot_view(std::size_t s) const noexcept;
  // Copies host.size() values of block b, from node i's value k on (running on into the next
  // nodes' rows), from or to `host`; waits for the copy.
  void copy_segment(std::size_t b, node_id i, std::size_t k, std::span<float> host,
                    bool to_device) const;

  gpu::backend* backend_ = nullptr;
  std::unique_ptr<gpu::stream> stream_;
  std::unique_ptr<gpu::sparse_rows> w_;
  node_id n_ = 0;
  std::size_t params_ = 0;
  std::size_t block_ = 0;
  std::size_t blocks_ = 0;
  gpu::buffer storage_;            // blocks_ + 1 slots of n * block values
  std::vector<std::size_t> slot_;  // block b lives in slot slot_[b]
  std::size_t spare_ = 0;          // the slot that receives the next block's output
};

}  // namespace mws::sim
