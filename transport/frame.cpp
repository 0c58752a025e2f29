#include "transport/detail/frame.hpp"

#include <cstring>

#include "transport/error.hpp"

#if defined(MWS_TRANSPORT_OPENSSL_AEAD)
#include <openssl/evp.h>
#endif

namespace mws::transport::detail {

frame_cipher::frame_cipher(aead_kind kind, const aead_key& key, std::uint64_t rekey_after_frames,
                           std::uint64_t rekey_after_bytes, bool sealing) noexcept
    : kind_(kind),
      key_(key),
      sealing_(sealing),
      rekey_after_frames_(rekey_after_frames),
      rekey_after_bytes_(rekey_after_bytes) {
  ensure_sodium();
  MWS_ASSERT(rekey_after_frames_ > 0 && rekey_after_bytes_ > 0);
  if (kind_ == aead_kind::aes256gcm) MWS_ASSERT(crypto_aead_aes256gcm_is_available() == 1);
  load_key();
}

frame_cipher::~frame_cipher() {
  sodium_memzero(key_.data(), key_.size());
  sodium_memzero(&aes_, sizeof aes_);
}

void frame_cipher::load_key() noexcept {
#if defined(MWS_TRANSPORT_OPENSSL_AEAD)
  if (!evp_) {
    evp_ = {EVP_CIPHER_CTX_new(), [](evp_cipher_ctx_st* c) { EVP_CIPHER_CTX_free(c); }};
    MWS_ASSERT(evp_ != nullptr);
    const EVP_CIPHER* cipher =
        kind_ == aead_kind::aes256gcm ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
    MWS_ASSERT(EVP_CipherInit_ex(evp_.get(), cipher, nullptr, nullptr, nullptr, sealing_ ? 1 : 0) ==
               1);
  }
  MWS_ASSERT(
      EVP_CipherInit_ex(evp_.get(), nullptr, nullptr, key_.data(), nullptr, sealing_ ? 1 : 0) == 1);
#else
  if (kind_ == aead_kind::aes256gcm) crypto_aead_aes256gcm_beforenm(&aes_, key_.data());
#endif
}

void frame_cipher::encrypt(const header_bytes& header, const std::uint8_t* plain,
                           std::uint8_t* cipher, std::size_t size, std::uint8_t* tag) noexcept {
  const auto nonce = counter_nonce(counter_);
  // libsodium declares the message pointers nonnull even for empty messages (ping, close).
  std::uint8_t empty = 0;
  if (size == 0) plain = cipher = &empty;
#if defined(MWS_TRANSPORT_OPENSSL_AEAD)
  MWS_ASSERT(sealing_ && size <= INT32_MAX);
  int len = 0;
  EVP_CIPHER_CTX* c = evp_.get();
  MWS_ASSERT(EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, nonce.data(), 1) == 1);
  MWS_ASSERT(EVP_CipherUpdate(c, nullptr, &len, header.data(), static_cast<int>(header.size())) ==
             1);
  MWS_ASSERT(EVP_CipherUpdate(c, cipher, &len, plain, static_cast<int>(size)) == 1);
  MWS_ASSERT(EVP_CipherFinal_ex(c, cipher + len, &len) == 1);
  MWS_ASSERT(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(tag_bytes), tag) == 1);
#else
  unsigned long long tag_len = 0;
  if (kind_ == aead_kind::aes256gcm) {
    crypto_aead_aes256gcm_encrypt_detached_afternm(cipher, tag, &tag_len, plain, size,
                                                   header.data(), header.size(), nullptr,
                                                   nonce.data(), &aes_);
  } else {
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(cipher, tag, &tag_len, plain, size,
                                                       header.data(), header.size(), nullptr,
                                                       nonce.data(), key_.data());
  }
#endif
}

bool frame_cipher::decrypt(const header_bytes& header, std::uint8_t* data, std::size_t size,
                           const std::uint8_t* tag) noexcept {
  const auto nonce = counter_nonce(counter_);
  std::uint8_t empty = 0;
  if (size == 0) data = &empty;
#if defined(MWS_TRANSPORT_OPENSSL_AEAD)
  MWS_ASSERT(!sealing_ && size <= INT32_MAX);
  int len = 0;
  EVP_CIPHER_CTX* c = evp_.get();
  std::array<std::uint8_t, tag_bytes> expected{};
  std::memcpy(expected.data(), tag, tag_bytes);
  MWS_ASSERT(EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, nonce.data(), 0) == 1);
  MWS_ASSERT(EVP_CipherUpdate(c, nullptr, &len, header.data(), static_cast<int>(header.size())) ==
             1);
  MWS_ASSERT(EVP_CipherUpdate(c, data, &len, data, static_cast<int>(size)) == 1);
  MWS_ASSERT(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(tag_bytes),
                                 expected.data()) == 1);
  std::array<std::uint8_t, 16> tail{};
  if (EVP_CipherFinal_ex(c, tail.data(), &len) != 1) {
    // EVP decrypts before it checks; wipe what must never be read as plaintext.
    sodium_memzero(data, size);
    return false;
  }
  return true;
#else
  if (kind_ == aead_kind::aes256gcm) {
    return crypto_aead_aes256gcm_decrypt_detached_afternm(data, nullptr, data, size, tag,
                                                          header.data(), header.size(),
                                                          nonce.data(), &aes_) == 0;
  }
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(data, nullptr, data, size, tag,
                                                            header.data(), header.size(),
                                                            nonce.data(), key_.data()) == 0;
#endif
}

void frame_cipher::advance(std::size_t payload_bytes) noexcept {
  // 2^64 frames cannot be reached (centuries at any link speed); the assert documents it.
  MWS_ASSERT(counter_ != UINT64_MAX);
  ++counter_;
  ++frames_since_rekey_;
  bytes_since_rekey_ += payload_bytes;
  if (frames_since_rekey_ >= rekey_after_frames_ || bytes_since_rekey_ >= rekey_after_bytes_) {
    constexpr std::uint8_t label[] = {'m', 'w', 's', ' ', 'r', 'e', 'k', 'e', 'y'};
    aead_key next{};
    crypto_generichash(next.data(), next.size(), label, sizeof label, key_.data(), key_.size());
    key_ = next;
    sodium_memzero(next.data(), next.size());
    load_key();
    frames_since_rekey_ = 0;
    bytes_since_rekey_ = 0;
    ++rekeys_;
  }
}

void frame_sealer::seal(frame_type type, const std::uint8_t* plain, std::size_t size,
                        std::uint8_t* cipher, header_bytes& header,
                        std::array<std::uint8_t, tag_bytes>& tag) noexcept {
  MWS_ASSERT(size <= UINT32_MAX - tag_bytes);
  const auto body = static_cast<std::uint32_t>(size + tag_bytes);
  header = {};
  for (int i = 0; i < 4; ++i)
    header[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(body >> (8 * i));
  header[4] = static_cast<std::uint8_t>(type);
  const std::uint64_t c = counter();
  for (int i = 0; i < 8; ++i)
    header[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(c >> (8 * i));
  encrypt(header, plain, cipher, size, tag.data());
  advance(size);
}

boost::system::result<frame_header> frame_opener::check_header(
    const header_bytes& header) const noexcept {
  frame_header out;
  for (int i = 3; i >= 0; --i)
    out.body_bytes = (out.body_bytes << 8) | header[static_cast<std::size_t>(i)];
  for (int i = 7; i >= 0; --i)
    out.counter = (out.counter << 8) | header[static_cast<std::size_t>(8 + i)];
  if (out.body_bytes > std::size_t{payload_bytes_max_} + tag_bytes) {
    return make_error_code(errc::frame_too_large);
  }
  if (out.body_bytes < tag_bytes || header[5] != 0 || header[6] != 0 || header[7] != 0) {
    return make_error_code(errc::frame_malformed);
  }
  const std::size_t payload = out.body_bytes - tag_bytes;
  switch (header[4]) {
    case static_cast<std::uint8_t>(frame_type::data):
    case static_cast<std::uint8_t>(frame_type::data_end):
      break;
    case static_cast<std::uint8_t>(frame_type::credit):
      if (payload != credit_payload_bytes) return make_error_code(errc::frame_malformed);
      break;
    case static_cast<std::uint8_t>(frame_type::ping):
    case static_cast<std::uint8_t>(frame_type::pong):
    case static_cast<std::uint8_t>(frame_type::close):
      if (payload != 0) return make_error_code(errc::frame_malformed);
      break;
    default:
      return make_error_code(errc::frame_malformed);
  }
  out.type = static_cast<frame_type>(header[4]);
  if (out.counter < counter()) return make_error_code(errc::frame_replayed);
  if (out.counter > counter()) return make_error_code(errc::frame_reordered);
  return out;
}

boost::system::error_code frame_opener::open(const frame_header& parsed, const header_bytes& header,
                                             std::span<std::uint8_t> body,
                                             const std::uint8_t* tag) noexcept {
  MWS_ASSERT(body.size() == parsed.payload_bytes() && parsed.counter == counter());
  if (!decrypt(header, body.data(), body.size(), tag))
    return make_error_code(errc::frame_auth_failed);
  advance(body.size());
  return {};
}

}  // namespace mws::transport::detail
