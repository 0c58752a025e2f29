// The hello: the first message each side of a connection sends, before any protocol message.
//
// It carries the address others should dial the sender at, a boot id (random per process
// start, so a peer's restart is visible and its link state can be reset), the averaging
// algorithm, and the sender's full tensor manifest, so that a peer averaging another model is
// refused with a line that says exactly how the two differ (runtime::describe_difference), not with
// an opaque hash mismatch.
//
// Decoding never trusts the bytes: the FlatBuffers Verifier runs with explicit limits, then
// every field is checked for meaning (address length, tensor count, name length, dtype, rank,
// checked element counts).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/model_file.hpp"

namespace mws::runtime {

inline constexpr std::uint16_t hello_version = 2;  // 2: large messages offered, sent in pieces
inline constexpr std::size_t hello_address_bytes_max = 256;
inline constexpr std::size_t hello_tensors_max = 4096;
inline constexpr std::size_t hello_name_bytes_max = 256;
inline constexpr std::size_t hello_rank_max = 8;
inline constexpr std::size_t hello_bytes_max = 4u << 20;

inline constexpr std::size_t hello_algorithm_bytes_max = 32;

struct hello {
  std::string address;
  std::uint64_t boot = 0;
  manifest tensors;
  std::string algorithm = "push-sum";  // runtime::to_string(averaging)
};

std::vector<std::uint8_t> encode_hello(const hello& h);

// The hello in `bytes`, or nothing with `why` set to a sentence for the log.
std::optional<hello> decode_hello(std::span<const std::uint8_t> bytes, std::string& why);

}  // namespace mws::runtime
