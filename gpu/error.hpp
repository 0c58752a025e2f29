// Errors of the compute backends, as boost::system::error_code values of one category.
#pragma once

#include <boost/system/error_code.hpp>

namespace mws::gpu {

enum class errc {
  ok = 0,
  size_mismatch = 1,     // operands differ in element count
  dtype_mismatch,        // operands differ in storage type
  bad_term_count,        // weighted_sum with 0 or more than max_terms inputs
  overlapping_operands,  // output partially overlaps an input (exact aliasing is allowed)
  wrong_memory_space,    // a host buffer handed to a device operation or vice versa
  out_of_memory,         // allocation failed
  device_error,          // the CUDA runtime or cuBLAS reported a failure
  null_buffer,           // a view with numel > 0 but no data
  bad_sparse_matrix,     // CSR offsets, columns or weights that do not make a valid matrix
};

const boost::system::error_category& gpu_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), gpu_category()};
}

}  // namespace mws::gpu

template <>
struct boost::system::is_error_code_enum<mws::gpu::errc> : std::true_type {};
