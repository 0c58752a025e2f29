// Argument checks shared by every backend, so that both refuse exactly the same calls.
#pragma once

#include <cstdint>
#include <span>

#include "gpu/backend.hpp"

namespace mws::gpu::detail {

// Whether a backend can compute on memory of this space (the CPU backend: all host spaces;
// CUDA: device memory only).
using space_predicate = bool (*)(memory_space) noexcept;

error_code check_same_shape(const_tensor_view a, const_tensor_view b) noexcept;
error_code check_operand(const_tensor_view v, space_predicate usable) noexcept;
error_code check_weighted_sum(tensor_view out, std::span<const weighted_term> terms,
                              space_predicate usable) noexcept;
error_code check_copy(tensor_view dst, const_tensor_view src) noexcept;
error_code check_convert(tensor_view dst, const_tensor_view src, space_predicate usable) noexcept;
error_code check_sparse_rows(std::span<const std::uint32_t> offsets,
                             std::span<const std::uint32_t> columns,
                             std::span<const float> weights) noexcept;
error_code check_mix_rows(std::uint32_t rows, std::size_t width, const_tensor_view x,
                          tensor_view out, space_predicate usable) noexcept;
error_code check_reduce(reduction op, const_tensor_view x, const_tensor_view y, const double* out,
                        space_predicate usable) noexcept;

}  // namespace mws::gpu::detail
