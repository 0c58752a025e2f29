#include "runtime/detail/staging.hpp"

namespace mws::runtime::detail {
namespace {

std::span<const std::byte> bytes_of(const gpu::const_tensor_view& v) {
  return {static_cast<const std::byte*>(v.data), v.bytes()};
}

}  // namespace

bool host_backend(const gpu::backend& b) noexcept {
  return b.name() == "cpu";
}

boost::system::error_code upload(gpu::backend& b, gpu::stream& s, gossip::tensor_set& dst,
                                 std::span<const std::span<const std::byte>> src) {
  for (std::size_t t = 0; t < dst.size(); ++t) {
    const auto to = dst.mutable_view(t);
    const gpu::const_tensor_view from(src[t].data(), to.numel, to.type, gpu::memory_space::host);
    if (auto ec = b.copy(s, to, from)) {
      (void)s.synchronize();  // let the copies already queued finish before src may go
      return ec;
    }
  }
  return s.synchronize();
}

gpu::result<host_tensors> download(gpu::backend& b, gpu::stream& s, const gossip::tensor_set& src,
                                   std::shared_ptr<const void> owner) {
  host_tensors out;
  if (host_backend(b)) {
    out.keep = std::move(owner);
    for (std::size_t t = 0; t < src.size(); ++t)
      out.tensors.push_back(bytes_of(src[t]));
    return out;
  }
  // One pinned allocation, each tensor 8-byte aligned in it.
  std::vector<std::size_t> offsets;
  std::size_t total = 0;
  for (std::size_t t = 0; t < src.size(); ++t) {
    offsets.push_back(total);
    total += (src[t].bytes() + 7) / 8 * 8;
  }
  auto staging = b.allocate(gpu::dtype::f32, total / 4, gpu::memory_space::pinned_host);
  if (!staging) return staging.error();
  auto held = std::make_shared<gpu::buffer>(std::move(*staging));
  auto* base = static_cast<std::byte*>(held->data());
  for (std::size_t t = 0; t < src.size(); ++t) {
    const auto from = src[t];
    const gpu::tensor_view to{base + offsets[t], from.numel, from.type,
                              gpu::memory_space::pinned_host};
    if (auto ec = b.copy(s, to, from)) {
      (void)s.synchronize();  // the staging buffer goes with this return
      return ec;
    }
    out.tensors.push_back({base + offsets[t], from.bytes()});
  }
  if (auto ec = s.synchronize()) return ec;
  out.keep = std::move(held);
  return out;
}

gpu::result<gossip::payload_ptr> to_backend(gpu::backend& b, gpu::stream& s,
                                            const gossip::payload_ptr& p,
                                            const gossip::manifest& spec) {
  if (!p || host_backend(b)) return p;
  auto copy = gossip::tensor_set::allocate(b, spec);
  if (!copy) return copy.error();
  std::vector<std::span<const std::byte>> src;
  for (std::size_t t = 0; t < p->size(); ++t)
    src.push_back(bytes_of((*p)[t]));
  if (auto ec = upload(b, s, *copy, src)) return ec;
  return std::make_shared<const gossip::tensor_set>(std::move(*copy));
}

}  // namespace mws::runtime::detail
