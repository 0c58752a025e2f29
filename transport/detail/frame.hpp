// The frame layer, sans-I/O: sealing and opening frames for one direction of a session.
//
// Wire form of a frame (all integers little-endian):
//   header (16 bytes, sent in clear, authenticated as associated data):
//     u32 body_bytes   ciphertext + 16-byte tag; checked against the cap before any read into
//                      memory, so a hostile prefix costs nothing
//     u8  type         data, data_end (last frame of a message), credit, ping, pong, close
//     u8[3] reserved   zero
//     u64 counter      the AEAD nonce; starts at 0, +1 per frame, never reset (also not by rekey)
//   ciphertext (body_bytes - 16), tag (16)
// Because the counter travels in the header, a stale counter is named a replay and a skipped one
// a reordering, before the tag is even checked; a wrong tag is tampering. Every error is final.
// Keys turn over (BLAKE2b of the old key) after the interval the sender announced in the
// handshake, counted identically on both ends, so no rekey message is needed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include "transport/detail/crypto.hpp"

struct evp_cipher_ctx_st;  // OpenSSL's EVP_CIPHER_CTX, when the build uses it (frame.cpp)
#include "transport/handshake.hpp"

namespace mws::transport::detail {

inline constexpr std::size_t frame_header_bytes = 16;
inline constexpr std::size_t credit_payload_bytes = 8;

enum class frame_type : std::uint8_t {
  data = 1,
  data_end = 2,
  credit = 3,
  ping = 4,
  pong = 5,
  close = 6,
};

struct frame_header {
  std::uint32_t body_bytes = 0;
  frame_type type = frame_type::data;
  std::uint64_t counter = 0;
  std::size_t payload_bytes() const noexcept { return body_bytes - tag_bytes; }
};

using header_bytes = std::array<std::uint8_t, frame_header_bytes>;

// One AEAD key with its precomputed state, the counter and the rekey schedule.
class frame_cipher {
 public:
  frame_cipher(aead_kind kind, const aead_key& key, std::uint64_t rekey_after_frames,
               std::uint64_t rekey_after_bytes, bool sealing) noexcept;
  frame_cipher(const frame_cipher&) = delete;
  frame_cipher& operator=(const frame_cipher&) = delete;
  ~frame_cipher();

  std::uint64_t counter() const noexcept { return counter_; }
  std::uint64_t rekeys() const noexcept { return rekeys_; }
  aead_kind kind() const noexcept { return kind_; }

 protected:
  void encrypt(const header_bytes& header, const std::uint8_t* plain, std::uint8_t* cipher,
               std::size_t size, std::uint8_t* tag) noexcept;
  [[nodiscard]] bool decrypt(const header_bytes& header, std::uint8_t* data, std::size_t size,
                             const std::uint8_t* tag) noexcept;
  void advance(std::size_t payload_bytes) noexcept;

 private:
  void load_key() noexcept;
  aead_kind kind_;
  aead_key key_;
  [[maybe_unused]] bool sealing_;  // used by the OpenSSL path only
  crypto_aead_aes256gcm_state aes_{};
  // Both AEADs through OpenSSL's EVP where the build has it (MWS_TRANSPORT_OPENSSL_AEAD): the
  // same standard AEADs on the wire, about twice the speed of libsodium 1.0.18's here.
  std::unique_ptr<evp_cipher_ctx_st, void (*)(evp_cipher_ctx_st*)> evp_{nullptr, nullptr};
  std::uint64_t counter_ = 0;
  std::uint64_t rekey_after_frames_;
  std::uint64_t rekey_after_bytes_;
  std::uint64_t frames_since_rekey_ = 0;
  std::uint64_t bytes_since_rekey_ = 0;
  std::uint64_t rekeys_ = 0;
};

// Sending direction.
class frame_sealer : public frame_cipher {
 public:
  frame_sealer(aead_kind kind, const aead_key& key, std::uint64_t rekey_after_frames,
               std::uint64_t rekey_after_bytes) noexcept
      : frame_cipher(kind, key, rekey_after_frames, rekey_after_bytes, true) {}
  // Fills `header`, encrypts `size` bytes from `plain` into `cipher` (they may be the same
  // memory, or `plain` may be caller memory that must not change) and writes the tag.
  void seal(frame_type type, const std::uint8_t* plain, std::size_t size, std::uint8_t* cipher,
            header_bytes& header, std::array<std::uint8_t, tag_bytes>& tag) noexcept;
};

// Receiving direction. check_header() before reading the body; open() after.
class frame_opener : public frame_cipher {
 public:
  frame_opener(aead_kind kind, const aead_key& key, std::uint64_t rekey_after_frames,
               std::uint64_t rekey_after_bytes, std::uint32_t payload_bytes_max) noexcept
      : frame_cipher(kind, key, rekey_after_frames, rekey_after_bytes, false),
        payload_bytes_max_(payload_bytes_max) {}
  // frame_too_large, frame_malformed, frame_replayed or frame_reordered.
  boost::system::result<frame_header> check_header(const header_bytes& header) const noexcept;
  // Decrypts `body` (ciphertext of header.payload_bytes()) in place; frame_auth_failed.
  boost::system::error_code open(const frame_header& parsed, const header_bytes& header,
                                 std::span<std::uint8_t> body, const std::uint8_t* tag) noexcept;

 private:
  std::uint32_t payload_bytes_max_;
};

}  // namespace mws::transport::detail
