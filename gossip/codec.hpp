// The wire form of a gossip message, and the validating decoder.
//
// Layout (all integers little-endian):
//   u32 header length | u16 version (1) | u16 zero | FlatBuffers header (schema gossip/wire.fbs),
//   zero-padded to a multiple of 8 bytes | tensor 0 bytes, zero-padded to 8 | tensor 1 | ...
// Every padding byte is zero and checked. The encoder takes the manifest because the header
// names every tensor.
// The header lists every tensor (name, dtype, numel, bytes) so a receiver knows the whole size
// before any tensor byte arrives, and the runtime can stream tensor bytes straight from and into
// model memory: encode_header() + tensor views on the way out, decode_header() then
// check_tensor_bytes() on the way in. encode() / decode() do the whole message in one buffer
// (the simulator's wire-faithful mode).
//
// Decoding never trusts the bytes: the header passes the FlatBuffers Verifier with explicit
// limits, then every field is checked for meaning against the local manifest; any failure is a
// specific errc and nothing is allocated beyond decode_limits.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include <boost/system/result.hpp>

#include "gossip/error.hpp"
#include "gossip/message.hpp"
#include "gossip/types.hpp"

namespace mws::gossip {

struct decode_limits {
  std::size_t message_bytes_max = std::size_t{1} << 34;  // whole message, tensors included
  std::size_t header_bytes_max = std::size_t{1} << 20;   // the FlatBuffers part
  unsigned verifier_depth_max = 8;
  unsigned verifier_tables_max = max_tensors + 16;
  round_t round_max = round_t{1} << 62;
  std::uint32_t degree_max = max_peers;
  bool check_finite = true;  // scan tensor data for NaN / infinity
};

// The length prefix plus the padded header, and where each tensor's bytes go after it.
struct wire_layout {
  std::size_t header_bytes = 0;             // prefix + FlatBuffers + padding: offset of tensor 0
  std::size_t padding_from = 0;             // prefix + FlatBuffers: where the zero padding starts
  std::vector<std::size_t> tensor_offsets;  // from the start of the message
  std::size_t total_bytes = 0;
};

inline constexpr std::uint16_t wire_version = 1;
inline constexpr std::size_t wire_prefix_bytes = 8;

// Bytes of the encoded message (header + padded tensors) without copying tensor bytes.
// `msg` matches `spec` (a message made by a node of this manifest does).
std::size_t wire_size(const message& msg, const manifest& spec);

// The prefix and header of `msg`, padded; the tensor bytes follow at wire_layout offsets.
std::vector<std::uint8_t> encode_header(const message& msg, const manifest& spec,
                                        wire_layout* layout = nullptr);

// The whole message in one buffer. Tensor payloads must be in host-readable memory.
std::vector<std::uint8_t> encode(const message& msg, const manifest& spec);

struct decoded_header {
  message_header header;
  wire_layout layout;
};

// Verifies and checks the prefix and header found at the start of `bytes` (which may hold only
// the header so far: `bytes.size() >= wire_prefix_bytes + header length` is enough). Checks the
// tensor list against `spec` and the announced total against limits.message_bytes_max.
result<decoded_header> decode_header(std::span<const std::uint8_t> bytes, const manifest& spec,
                                     const decode_limits& limits = {});

// Checks the tensor bytes of a complete message whose header decoded to `h`: total length,
// alignment, finiteness (when limits.check_finite). `bytes` is the whole message.
boost::system::error_code check_tensor_bytes(std::span<const std::uint8_t> bytes,
                                             const decoded_header& h, const manifest& spec,
                                             const decode_limits& limits = {});

// The tensor bytes of a message whose header decoded to `h`, checked as they arrive in order (a
// runtime that mixes a share while it streams in holds no whole message): every padding byte
// zero, every value finite (when limits.check_finite). Each run of whole elements goes to
// `part` (tensor index, a host view aligned for its dtype, valid during the call) once
// checked; an element split between two feeds goes once whole.
class tensor_stream {
 public:
  using part_fn =
      std::function<boost::system::error_code(std::size_t tensor, gpu::const_tensor_view part)>;
  tensor_stream(decoded_header h, const manifest& spec, const decode_limits& limits = {});

  // The next bytes of the message (counted from its first byte: the header's are skipped).
  // Errors: malformed (padding), non_finite_tensor, trailing_bytes, or part's own; the
  // stream takes nothing after one.
  boost::system::error_code feed(std::span<const std::uint8_t> bytes, const part_fn& part);
  // Every byte of the message was fed, without error.
  bool done() const noexcept { return !failed_ && at_ == h_.layout.total_bytes; }

 private:
  boost::system::error_code feed_tensor(std::size_t t, std::span<const std::uint8_t> bytes,
                                        const part_fn& part);
  boost::system::error_code give(std::size_t t, const std::uint8_t* p, std::size_t numel,
                                 const part_fn& part);

  decoded_header h_;
  const manifest& spec_;
  bool check_finite_ = true;
  std::size_t at_ = 0;  // bytes fed so far
  bool failed_ = false;
  alignas(8) std::array<std::uint8_t, 8> carry_{};  // the start of a split element
  std::size_t carried_ = 0;
  std::vector<std::uint64_t> aligned_;  // copies of parts misaligned in the caller's buffer
};

// decode_header + check_tensor_bytes; the payload's views point into `bytes` (host memory) and
// `keep_alive` (may be null: then the payload is borrowed, see tensor_set) owns them.
result<message> decode(std::span<const std::uint8_t> bytes, const manifest& spec,
                       std::shared_ptr<const void> keep_alive = nullptr,
                       const decode_limits& limits = {});

}  // namespace mws::gossip
