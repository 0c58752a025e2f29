// The mws handshake, in the spirit of Noise XX (noiseprotocol.org), as sans-I/O state machines:
// they take and return bytes and never touch a socket, so the connection code drives them and
// the fuzzer (tests/fuzz/) calls them directly.
//
//   -> e                              msg1: "MWS" 1, caps, e_i, psk tag          (53 bytes)
//   <- e, ee, s, es, {params}          msg2: caps, e_r, enc(s_r), enc(params)     (121 bytes)
//   -> s, se, {params}                 msg3: enc(s_i), enc(params)                (88 bytes)
//
// X25519 ephemerals both ways; each static key travels encrypted and is proven by a DH with the
// other side's ephemeral; BLAKE2b-512 transcript hash over the protocol name, the capability
// bytes and every key, used as the AEAD associated data; keys come from an HKDF over keyed
// BLAKE2b. The mesh pre-shared key (all zeros when none is set) is mixed into the chaining key
// before the first message, so a node without it derives other keys and cannot finish; msg1
// also carries a tag keyed by it so the responder names the refusal (psk_mismatch) before it
// spends a DH. The data AEAD is AES-256-GCM when both capability bytes say so, else
// ChaCha20-Poly1305 (IETF); the capability bytes are in the transcript, so a downgrade fails.
// params = the frame cap, receive window and rekey interval that side will use.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <boost/system/result.hpp>

#include "transport/detail/crypto.hpp"
#include "transport/identity.hpp"

namespace mws::transport {

inline constexpr std::size_t handshake_msg1_bytes = 53;
inline constexpr std::size_t handshake_msg2_bytes = 121;
inline constexpr std::size_t handshake_msg3_bytes = 88;

enum class aead_kind : std::uint8_t { chacha20poly1305 = 0, aes256gcm = 1 };

// What one side announces and enforces for the frames it receives and sends.
struct session_limits {
  std::uint32_t frame_bytes_max = 4u << 20;      // largest payload per frame this side accepts
  std::uint32_t window_bytes = 16u << 20;        // unconsumed bytes it lets the peer send ahead
  std::uint64_t rekey_after_frames = 1u << 20;   // its sending key turns over after this many
  std::uint64_t rekey_after_bytes = 1ull << 30;  // ... or after this many payload bytes
};

// Bounds on what a peer may announce; outside them the handshake fails with bad_parameters.
inline constexpr std::uint32_t frame_bytes_floor = 1024;
inline constexpr std::uint32_t frame_bytes_ceiling = 64u << 20;

struct handshake_config {
  std::optional<std::array<std::uint8_t, 32>> mesh_psk;  // nodes of one mesh share it
  std::vector<public_key> allowlist;                     // empty: any authenticated peer
  std::optional<public_key> expected_peer;               // dialler: the key it means to reach
  session_limits limits;
  bool offer_aes256gcm = true;  // and the CPU has AES-NI (crypto_aead_aes256gcm_is_available)
};

// The outcome of a completed handshake: everything the frame layer needs.
struct session {
  aead_kind aead = aead_kind::chacha20poly1305;
  detail::aead_key send_key{};
  detail::aead_key receive_key{};
  public_key remote_static{};
  session_limits local;   // what we enforce on receive, and our sending rekey interval
  session_limits remote;  // what the peer announced
  detail::hash handshake_hash{};
  ~session();
};

// Initiator side. Call order: write_message1, read_message2 (-> msg3 bytes), finish().
class handshake_initiator {
 public:
  // Keeps references: `self` and `config` must outlive this object (temporaries are refused).
  handshake_initiator(const identity& self, const handshake_config& config);
  handshake_initiator(const identity&&, const handshake_config&) = delete;
  handshake_initiator(const identity&, const handshake_config&&) = delete;
  handshake_initiator(const identity&&, const handshake_config&&) = delete;
  std::array<std::uint8_t, handshake_msg1_bytes> write_message1();
  boost::system::result<std::array<std::uint8_t, handshake_msg3_bytes>> read_message2(
      std::span<const std::uint8_t> msg2);
  session finish();  // only after read_message2 succeeded

 private:
  const identity& self_;
  const handshake_config& config_;
  detail::symmetric_state state_;
  identity ephemeral_;
  std::array<std::uint8_t, 32> remote_ephemeral_{};
  std::uint8_t caps_ = 0;
  session result_;
  int step_ = 0;
};

// Responder side. Call order: read_message1 (-> msg2 bytes), read_message3 (-> session).
// Every input is untrusted: wrong sizes, bad tags, weak keys and refused peers are errors.
class handshake_responder {
 public:
  // Keeps references: `self` and `config` must outlive this object (temporaries are refused).
  handshake_responder(const identity& self, const handshake_config& config);
  handshake_responder(const identity&&, const handshake_config&) = delete;
  handshake_responder(const identity&, const handshake_config&&) = delete;
  handshake_responder(const identity&&, const handshake_config&&) = delete;
  boost::system::result<std::array<std::uint8_t, handshake_msg2_bytes>> read_message1(
      std::span<const std::uint8_t> msg1);
  boost::system::result<session> read_message3(std::span<const std::uint8_t> msg3);

 private:
  const identity& self_;
  const handshake_config& config_;
  detail::symmetric_state state_;
  identity ephemeral_;
  std::array<std::uint8_t, 32> remote_ephemeral_{};
  std::uint8_t caps_ = 0;
  int step_ = 0;
};

}  // namespace mws::transport
