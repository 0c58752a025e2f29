#include "gpu/detail/validate.hpp"

#include <cmath>
#include <cstdint>

namespace mws::gpu::detail {
namespace {

// Whether a and b share a byte.
bool overlaps(const_tensor_view a, const_tensor_view b) noexcept {
  if (a.bytes() == 0 || b.bytes() == 0) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data);
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data);
  return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

bool partially_overlaps(const_tensor_view a, const_tensor_view b) noexcept {
  const bool identical = a.data == b.data && a.bytes() == b.bytes();
  return overlaps(a, b) && !identical;
}

}  // namespace

error_code check_same_shape(const_tensor_view a, const_tensor_view b) noexcept {
  if (a.numel != b.numel) return errc::size_mismatch;
  if (a.type != b.type) return errc::dtype_mismatch;
  return {};
}

error_code check_operand(const_tensor_view v, space_predicate usable) noexcept {
  if (v.numel > 0 && v.data == nullptr) return errc::null_buffer;
  if (!usable(v.space)) return errc::wrong_memory_space;
  return {};
}

error_code check_weighted_sum(tensor_view out, std::span<const weighted_term> terms,
                              space_predicate usable) noexcept {
  if (terms.empty() || terms.size() > backend::max_terms) return errc::bad_term_count;
  if (auto ec = check_operand(out, usable)) return ec;
  for (const auto& t : terms) {
    if (auto ec = check_operand(t.x, usable)) return ec;
    if (auto ec = check_same_shape(out, t.x)) return ec;
    if (partially_overlaps(out, t.x)) return errc::overlapping_operands;
  }
  return {};
}

error_code check_sparse_rows(std::span<const std::uint32_t> offsets,
                             std::span<const std::uint32_t> columns,
                             std::span<const float> weights) noexcept {
  if (offsets.size() < 2 || offsets.size() - 1 > UINT32_MAX) return errc::bad_sparse_matrix;
  const auto n = static_cast<std::uint32_t>(offsets.size() - 1);
  if (offsets.front() != 0 || offsets.back() != columns.size() || columns.size() != weights.size())
    return errc::bad_sparse_matrix;
  for (float w : weights)
    if (!std::isfinite(w)) return errc::bad_sparse_matrix;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (offsets[i + 1] <= offsets[i]) return errc::bad_sparse_matrix;
    for (std::uint32_t k = offsets[i]; k < offsets[i + 1]; ++k)
      if (columns[k] >= n || (k > offsets[i] && columns[k] <= columns[k - 1]))
        return errc::bad_sparse_matrix;
  }
  return {};
}

error_code check_mix_rows(std::uint32_t rows, std::size_t width, const_tensor_view x,
                          tensor_view out, space_predicate usable) noexcept {
  if (auto ec = check_operand(x, usable)) return ec;
  if (auto ec = check_operand(out, usable)) return ec;
  if (auto ec = check_same_shape(x, out)) return ec;
  if (x.type != dtype::f32) return errc::dtype_mismatch;
  if (width == 0 || x.numel / width != rows || x.numel % width != 0) return errc::size_mismatch;
  if (overlaps(x, out)) return errc::overlapping_operands;
  return {};
}

error_code check_copy(tensor_view dst, const_tensor_view src) noexcept {
  if (auto ec = check_same_shape(dst, src)) return ec;
  if (dst.numel > 0 && (dst.data == nullptr || src.data == nullptr)) return errc::null_buffer;
  if (partially_overlaps(dst, src)) return errc::overlapping_operands;
  return {};
}

error_code check_convert(tensor_view dst, const_tensor_view src, space_predicate usable) noexcept {
  if (dst.numel != src.numel) return errc::size_mismatch;
  if (auto ec = check_operand(dst, usable)) return ec;
  if (auto ec = check_operand(src, usable)) return ec;
  const auto dst0 = reinterpret_cast<std::uintptr_t>(dst.data);
  const auto src0 = reinterpret_cast<std::uintptr_t>(src.data);
  const bool disjoint = dst0 + dst.bytes() <= src0 || src0 + src.bytes() <= dst0;
  if (dst.numel > 0 && !disjoint && !(dst0 == src0 && dst.type == src.type)) {
    return errc::overlapping_operands;
  }
  return {};
}

error_code check_reduce(reduction op, const_tensor_view x, const_tensor_view y, const double* out,
                        space_predicate usable) noexcept {
  if (out == nullptr) return errc::null_buffer;
  if (auto ec = check_operand(x, usable)) return ec;
  if (op == reduction::sum) return {};
  if (auto ec = check_operand(y, usable)) return ec;
  return check_same_shape(x, y);
}

}  // namespace mws::gpu::detail
