// libFuzzer target: the frame decoder (check_header + open) on hostile bytes.
// Mode 0: the input is a raw byte stream read as frames under a fixed key.
// Mode 1: the input describes frames that are sealed genuinely, then bytes of the wire image are
// XORed at chosen offsets; every frame that still opens must be the frame that was sealed, and
// with no effective change every frame must open.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "transport/detail/frame.hpp"

namespace {

using namespace mws::transport;
using namespace mws::transport::detail;

constexpr std::uint32_t cap = 4096;

aead_key fixed_key() {
  aead_key k{};
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = static_cast<std::uint8_t>(i * 7 + 1);
  return k;
}

aead_kind kind_for(std::uint8_t bit) {
  return (bit && crypto_aead_aes256gcm_is_available() == 1) ? aead_kind::aes256gcm
                                                            : aead_kind::chacha20poly1305;
}

struct opened {
  frame_type type;
  std::vector<std::uint8_t> payload;
};

// Decodes frames from `wire` until an error or the end; returns the frames that opened.
std::vector<opened> decode(aead_kind kind, std::uint64_t rekey_frames,
                           const std::vector<std::uint8_t>& wire, bool& clean_end) {
  frame_opener opener(kind, fixed_key(), rekey_frames, 1u << 16, cap);
  std::vector<opened> out;
  std::size_t at = 0;
  clean_end = false;
  while (true) {
    if (at == wire.size()) {
      clean_end = true;
      return out;
    }
    if (wire.size() - at < frame_header_bytes) return out;
    header_bytes header{};
    std::memcpy(header.data(), wire.data() + at, header.size());
    at += header.size();
    auto parsed = opener.check_header(header);
    if (!parsed) return out;
    if (wire.size() - at < parsed->body_bytes) return out;
    std::vector<std::uint8_t> body(wire.data() + at, wire.data() + at + parsed->payload_bytes());
    const std::uint8_t* tag = wire.data() + at + parsed->payload_bytes();
    at += parsed->body_bytes;
    if (opener.open(*parsed, header, body, tag)) return out;
    out.push_back({parsed->type, std::move(body)});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t mode = data[0];
  const aead_kind kind = kind_for(mode & 2);
  const std::uint64_t rekey_frames = 1 + (data[1] & 3);
  data += 2;
  size -= 2;
  if ((mode & 1) == 0) {
    bool clean = false;
    (void)decode(kind, rekey_frames, std::vector<std::uint8_t>(data, data + size), clean);
    return 0;
  }
  // Mode 1: [n frames][per frame: type byte, length byte, payload...][mutations: offset16, xor]
  std::size_t at = 0;
  if (at >= size) return 0;
  const std::size_t frames = data[at++] % 8;
  frame_sealer sealer(kind, fixed_key(), rekey_frames, 1u << 16);
  std::vector<opened> sent;
  std::vector<std::uint8_t> wire;
  for (std::size_t i = 0; i < frames && at + 2 <= size; ++i) {
    const auto type = static_cast<frame_type>(1 + data[at] % 6);
    std::size_t len = data[at + 1];
    at += 2;
    if (type == frame_type::credit) len = credit_payload_bytes;
    if (type == frame_type::ping || type == frame_type::pong || type == frame_type::close) len = 0;
    std::vector<std::uint8_t> payload(len);
    for (std::size_t j = 0; j < len; ++j)
      payload[j] = at < size ? data[at++] : 0;
    header_bytes header{};
    std::array<std::uint8_t, tag_bytes> tag{};
    std::vector<std::uint8_t> cipher(len);
    sealer.seal(type, payload.data(), len, cipher.data(), header, tag);
    wire.insert(wire.end(), header.begin(), header.end());
    wire.insert(wire.end(), cipher.begin(), cipher.end());
    wire.insert(wire.end(), tag.begin(), tag.end());
    sent.push_back({type, std::move(payload)});
  }
  const std::vector<std::uint8_t> original = wire;
  while (at + 3 <= size && !wire.empty()) {
    const std::size_t offset =
        (std::size_t{data[at]} | std::size_t{data[at + 1]} << 8) % wire.size();
    wire[offset] ^= data[at + 2];
    at += 3;
  }
  if (at < size && (data[at] & 1) && !wire.empty())
    wire.resize(data[at] % wire.size());  // truncate
  bool clean = false;
  const auto got = decode(kind, rekey_frames, wire, clean);
  if (got.size() > sent.size()) __builtin_trap();
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i].type != sent[i].type || got[i].payload != sent[i].payload) __builtin_trap();
  }
  if (wire == original && (got.size() != sent.size() || !clean)) __builtin_trap();
  return 0;
}
