#include "gossip/tensors.hpp"

#include "gossip/detail/assert.hpp"

namespace mws::gossip {
namespace {

constexpr std::size_t alignment_bytes = 64;

constexpr std::size_t round_up(std::size_t n) noexcept {
  return (n + alignment_bytes - 1) / alignment_bytes * alignment_bytes;
}

}  // namespace

std::size_t manifest_bytes(const manifest& m) noexcept {
  std::size_t total = 0;
  for (const auto& t : m)
    total += t.numel * gpu::dtype_size(t.type);
  return total;
}

result<tensor_set> tensor_set::allocate(gpu::backend& b, const manifest& m) {
  MWS_ASSERT(m.size() <= max_tensors);
  std::size_t total = 0;
  for (const auto& t : m)
    total += round_up(t.numel * gpu::dtype_size(t.type));
  // One allocation for the whole set; the backend hands out f32 elements, 64-byte aligned by
  // construction of the offsets (the allocation itself is at least that aligned).
  auto storage = b.allocate(gpu::dtype::f32, total / 4, gpu::memory_space::device);
  if (!storage) return storage.error();
  tensor_set s;
  s.views_.reserve(m.size());
  auto* base = static_cast<unsigned char*>(storage->data());
  std::size_t offset = 0;
  for (const auto& t : m) {
    s.views_.push_back(gpu::tensor_view{base + offset, t.numel, t.type, gpu::memory_space::device});
    offset += round_up(t.numel * gpu::dtype_size(t.type));
  }
  s.storage_ = std::move(*storage);
  return s;
}

tensor_set tensor_set::borrow(std::vector<gpu::const_tensor_view> views,
                              std::shared_ptr<const void> keep_alive) {
  tensor_set s;
  s.views_.reserve(views.size());
  for (const auto& v : views) {
    // const is restored by the interface: a borrowed set is only reachable as const.
    s.views_.push_back(gpu::tensor_view{const_cast<void*>(v.data), v.numel, v.type, v.space});
  }
  s.keep_alive_ = std::move(keep_alive);
  return s;
}

std::size_t tensor_set::data_bytes() const noexcept {
  std::size_t total = 0;
  for (const auto& v : views_)
    total += v.bytes();
  return total;
}

result<model> model::create(gpu::backend& b, manifest spec, double w) {
  auto x = tensor_set::allocate(b, spec);
  if (!x) return x.error();
  model m;
  m.spec = std::move(spec);
  m.x = std::move(*x);
  m.w = w;
  return m;
}

}  // namespace mws::gossip
