// Sets of named tensors: the model a node averages, and the immutable payloads its messages
// carry.
//
// A tensor_set holds one tensor per manifest entry, all in one allocation of the backend (each
// tensor 64-byte aligned), or views onto memory somebody else owns (decoded wire bytes) kept
// alive by a shared handle. Payloads travel as std::shared_ptr<const tensor_set>: a message can
// be handed to its receiver, duplicated by a simulated network, or kept as a receiver's last
// running sum without copying tensor bytes.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include <boost/system/result.hpp>

#include "gossip/types.hpp"
#include "gpu/backend.hpp"

namespace mws::gossip {

template <class T>
using result = boost::system::result<T>;

class tensor_set {
 public:
  tensor_set() = default;

  // Allocates the tensors of `m` in the backend's device memory; contents uninitialised.
  static result<tensor_set> allocate(gpu::backend& b, const manifest& m);

  // Views onto memory owned elsewhere; `keep_alive` (may be null) owns it. A set with a null
  // keep_alive is borrowed: valid only during the call that received it, and a node that wants
  // to keep it copies it.
  static tensor_set borrow(std::vector<gpu::const_tensor_view> views,
                           std::shared_ptr<const void> keep_alive);

  std::size_t size() const noexcept { return views_.size(); }
  std::span<const gpu::tensor_view> views() noexcept { return views_; }
  gpu::const_tensor_view operator[](std::size_t i) const noexcept { return views_[i]; }
  gpu::tensor_view mutable_view(std::size_t i) noexcept { return views_[i]; }
  // Bytes of tensor data (without padding).
  std::size_t data_bytes() const noexcept;
  // True when the data is neither owned nor kept alive by this set.
  bool borrowed() const noexcept { return !storage_.data() && !keep_alive_; }

 private:
  gpu::buffer storage_;
  std::shared_ptr<const void> keep_alive_;
  // Mutable views for owned storage; for borrowed sets the const-ness is the caller's promise
  // (the set is only ever exposed as const).
  std::vector<gpu::tensor_view> views_;
};

using payload_ptr = std::shared_ptr<const tensor_set>;

// The state a node averages: x (the weighted model, one tensor per manifest entry) and the
// scalar weight w. The estimate of the mesh's average is x / w. A driver builds a model, writes
// its initial values (x = w * initial parameters for a weighted average), and moves it into a
// node; afterwards it reads it through averaging_node::state().
struct model {
  manifest spec;
  tensor_set x;
  double w = 1.0;

  static result<model> create(gpu::backend& b, manifest spec, double w = 1.0);
};

// Sum of the sizes of all tensors of a manifest, in bytes.
std::size_t manifest_bytes(const manifest& m) noexcept;

}  // namespace mws::gossip
