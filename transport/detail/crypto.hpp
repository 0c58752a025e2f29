// Symmetric primitives shared by the handshake and the frame layer: BLAKE2b-based HKDF, the
// Noise symmetric state, and the per-direction AEAD key with counter nonces.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "transport/detail/sodium.hpp"

namespace mws::transport::detail {

inline constexpr std::size_t hash_bytes = 64;  // BLAKE2b-512, as Noise's BLAKE2b
inline constexpr std::size_t aead_key_bytes = 32;
inline constexpr std::size_t tag_bytes = 16;

using hash = std::array<std::uint8_t, hash_bytes>;
using aead_key = std::array<std::uint8_t, aead_key_bytes>;

// HKDF (RFC 5869 shape) with keyed BLAKE2b-512 as the PRF in place of HMAC: keyed BLAKE2b is a
// PRF by design, so the HMAC wrapper adds nothing.
inline void hkdf2(const hash& chaining_key, std::span<const std::uint8_t> input, hash& out1,
                  hash& out2) noexcept {
  hash temp{};
  crypto_generichash(temp.data(), temp.size(), input.data(), input.size(), chaining_key.data(),
                     chaining_key.size());
  const std::uint8_t one = 1;
  crypto_generichash(out1.data(), out1.size(), &one, 1, temp.data(), temp.size());
  std::array<std::uint8_t, hash_bytes + 1> second{};
  std::copy(out1.begin(), out1.end(), second.begin());
  second[hash_bytes] = 2;
  crypto_generichash(out2.data(), out2.size(), second.data(), second.size(), temp.data(),
                     temp.size());
  sodium_memzero(temp.data(), temp.size());
  sodium_memzero(second.data(), second.size());
}

// 12-byte AEAD nonce: 4 zero bytes, then the 64-bit counter little-endian (Noise ChaChaPoly).
inline std::array<std::uint8_t, 12> counter_nonce(std::uint64_t counter) noexcept {
  std::array<std::uint8_t, 12> nonce{};
  for (int i = 0; i < 8; ++i)
    nonce[static_cast<std::size_t>(4 + i)] = static_cast<std::uint8_t>(counter >> (8 * i));
  return nonce;
}

// Noise's SymmetricState: chaining key, handshake hash, and a ChaCha20-Poly1305 key for the
// handshake's encrypted fields. Single-threaded, owned by one handshake.
class symmetric_state {
 public:
  explicit symmetric_state(std::span<const std::uint8_t> protocol_name) noexcept {
    crypto_generichash(h_.data(), h_.size(), protocol_name.data(), protocol_name.size(), nullptr,
                       0);
    ck_ = h_;
  }
  symmetric_state(const symmetric_state&) = delete;
  symmetric_state& operator=(const symmetric_state&) = delete;
  ~symmetric_state() {
    sodium_memzero(ck_.data(), ck_.size());
    sodium_memzero(k_.data(), k_.size());
  }

  void mix_hash(std::span<const std::uint8_t> data) noexcept {
    crypto_generichash_state st;
    crypto_generichash_init(&st, nullptr, 0, h_.size());
    crypto_generichash_update(&st, h_.data(), h_.size());
    crypto_generichash_update(&st, data.data(), data.size());
    crypto_generichash_final(&st, h_.data(), h_.size());
  }

  void mix_key(std::span<const std::uint8_t> input) noexcept {
    hash out1{}, out2{};
    hkdf2(ck_, input, out1, out2);
    ck_ = out1;
    std::copy_n(out2.begin(), k_.size(), k_.begin());
    has_key_ = true;
    n_ = 0;
    sodium_memzero(out2.data(), out2.size());
  }

  // EncryptAndHash: out = ciphertext || tag, out.size() == plain.size() + tag_bytes.
  void encrypt_and_hash(std::span<const std::uint8_t> plain, std::span<std::uint8_t> out) noexcept {
    MWS_ASSERT(has_key_ && out.size() == plain.size() + tag_bytes);
    const auto nonce = counter_nonce(n_++);
    unsigned long long len = 0;
    crypto_aead_chacha20poly1305_ietf_encrypt(out.data(), &len, plain.data(), plain.size(),
                                              h_.data(), h_.size(), nullptr, nonce.data(),
                                              k_.data());
    mix_hash(out);
  }

  // DecryptAndHash; false when the tag fails (the state is then unusable).
  [[nodiscard]] bool decrypt_and_hash(std::span<const std::uint8_t> in,
                                      std::span<std::uint8_t> plain) noexcept {
    MWS_ASSERT(has_key_ && in.size() == plain.size() + tag_bytes);
    const auto nonce = counter_nonce(n_++);
    unsigned long long len = 0;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(plain.data(), &len, nullptr, in.data(), in.size(),
                                                  h_.data(), h_.size(), nonce.data(),
                                                  k_.data()) != 0) {
      return false;
    }
    mix_hash(in);
    return true;
  }

  // Split: the two transport keys (initiator-to-responder, responder-to-initiator).
  void split(aead_key& initiator_to_responder, aead_key& responder_to_initiator) noexcept {
    hash out1{}, out2{};
    hkdf2(ck_, {}, out1, out2);
    std::copy_n(out1.begin(), aead_key_bytes, initiator_to_responder.begin());
    std::copy_n(out2.begin(), aead_key_bytes, responder_to_initiator.begin());
    sodium_memzero(out1.data(), out1.size());
    sodium_memzero(out2.data(), out2.size());
  }

  const hash& handshake_hash() const noexcept { return h_; }

 private:
  hash ck_{};
  hash h_{};
  aead_key k_{};
  std::uint64_t n_ = 0;
  bool has_key_ = false;
};

}  // namespace mws::transport::detail
