// Moving tensors between the host (model files, the wire, HTTP, checkpoints) and the memory of
// the node's compute backend. On the CPU backend that memory is host memory and nothing is
// copied; on CUDA every transfer goes through the node's stream and is waited for, so that the
// host bytes are final (or may be released) when a function returns. Internal to runtime/.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "gossip/tensors.hpp"
#include "gpu/backend.hpp"

namespace mws::runtime::detail {

// Whether the backend computes in host memory (the CPU backend).
bool host_backend(const gpu::backend& b) noexcept;

// dst (the backend's memory) = src, tensor by tensor (src[t] holds tensor t's bytes).
boost::system::error_code upload(gpu::backend& b, gpu::stream& s, gossip::tensor_set& dst,
                                 std::span<const std::span<const std::byte>> src);

// Tensors readable from the host, kept alive by `keep`.
struct host_tensors {
  std::shared_ptr<const void> keep;
  std::vector<std::span<const std::byte>> tensors;
};

// `src` readable from the host: its own memory on a host backend (kept alive by `owner`, which
// may be null when the caller keeps src unchanged while it reads), else a copy in pinned host
// memory.
gpu::result<host_tensors> download(gpu::backend& b, gpu::stream& s, const gossip::tensor_set& src,
                                   std::shared_ptr<const void> owner);

// A payload in the backend's memory: `p` itself on a host backend, else a device copy.
gpu::result<gossip::payload_ptr> to_backend(gpu::backend& b, gpu::stream& s,
                                            const gossip::payload_ptr& p,
                                            const gossip::manifest& spec);

}  // namespace mws::runtime::detail
