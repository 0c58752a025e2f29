// The wire form of SWIM membership messages: one FlatBuffers buffer (gossip/membership.fbs,
// file identifier "MWSM"), framed by the transport.
//
// Decoding never trusts the bytes: the FlatBuffers Verifier runs with explicit depth and table
// limits, then every field is checked for meaning (keys present, addresses bounded, states
// known, row counts bounded); any failure is a specific gossip errc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <boost/system/result.hpp>

#include "gossip/error.hpp"
#include "gossip/membership.hpp"

namespace mws::gossip {

struct membership_decode_limits {
  std::size_t message_bytes_max = std::size_t{64} << 20;
  std::size_t rows_max = 65536 + 1;  // rows of a push-pull (members_max plus the sender)
  std::size_t updates_max = 64;      // piggybacked rows of a ping or ack
  unsigned verifier_depth_max = 8;
};

std::vector<std::uint8_t> encode_membership(const swim::message& msg);

boost::system::result<swim::message> decode_membership(std::span<const std::uint8_t> bytes,
                                                       const membership_decode_limits& limits = {});

}  // namespace mws::gossip
