// Errors of the gossip module, as boost::system::error_code values of one category.
//
// These are expected operating errors: a peer sent bytes or a message that this node refuses.
// Programmer errors (a manifest that does not match the model, an out-of-range config) are
// MWS_ASSERT failures instead.
#pragma once

#include <type_traits>

#include <boost/system/error_code.hpp>

namespace mws::gossip {

enum class errc {
  ok = 0,
  // Codec: the bytes.
  truncated = 1,  // shorter than its length prefix or the tensor data it announces
  too_large,      // over decode_limits (bytes, header bytes)
  malformed,      // the FlatBuffers Verifier refused the header
  bad_kind,       // unknown message kind
  // Codec: the meaning.
  wrong_tensor_count,  // tensor list length differs from the manifest (or a control message
                       // carries tensors)
  wrong_tensor_name,   // a tensor's name differs from the manifest's at that position
  wrong_dtype,         // a tensor's dtype differs from the manifest's, or is unknown
  wrong_numel,         // a tensor's element count differs from the manifest's
  wrong_byte_size,     // bytes != numel x dtype size
  trailing_bytes,      // bytes left after the last tensor
  bad_weight,          // weight not finite, or not positive where the algorithm needs it
  non_finite_tensor,   // a NaN or infinity in tensor data
  out_of_range,        // a counter (round, step, degree, sequence) outside its bound
  misaligned,          // tensor data not aligned for its dtype (the caller's buffer)
  // State machines.
  not_a_peer,       // a message from a peer outside this node's configuration
  wrong_algorithm,  // a message kind that this node's algorithm does not use
  backend_failed,   // a mixing operation failed in gpu/ (see the log of the backend)
  not_supported,    // the algorithm has no such operation (add_peer outside push_sum)
  out_of_turn,      // a streamed share's call out of order (node.hpp, begin_share)
};

const boost::system::error_category& gossip_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), gossip_category()};
}

}  // namespace mws::gossip

template <>
struct boost::system::is_error_code_enum<mws::gossip::errc> : std::true_type {};
