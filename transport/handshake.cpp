#include "transport/handshake.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "transport/error.hpp"

namespace mws::transport {
namespace {

constexpr std::string_view protocol_name = "mws/1 Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";
constexpr std::array<std::uint8_t, 4> msg1_magic{'M', 'W', 'S', 1};
constexpr std::size_t params_bytes = 24;
constexpr std::size_t tag_key_bytes = 32;

std::span<const std::uint8_t> name_bytes() {
  return {reinterpret_cast<const std::uint8_t*>(protocol_name.data()), protocol_name.size()};
}

std::array<std::uint8_t, 32> psk_of(const handshake_config& config) {
  return config.mesh_psk.value_or(std::array<std::uint8_t, 32>{});
}

std::uint8_t local_caps(const handshake_config& config) {
  detail::ensure_sodium();
  return (config.offer_aes256gcm && crypto_aead_aes256gcm_is_available() == 1) ? 1 : 0;
}

// A key derived from the PSK that only authenticates msg1; separate from the PSK itself.
std::array<std::uint8_t, 16> psk_tag(const handshake_config& config,
                                     std::span<const std::uint8_t> covered) {
  const auto psk = psk_of(config);
  std::array<std::uint8_t, tag_key_bytes> tag_key{};
  constexpr std::string_view label = "mws/1 psk tag";
  crypto_generichash(tag_key.data(), tag_key.size(),
                     reinterpret_cast<const std::uint8_t*>(label.data()), label.size(), psk.data(),
                     psk.size());
  std::array<std::uint8_t, 16> tag{};
  crypto_generichash(tag.data(), tag.size(), covered.data(), covered.size(), tag_key.data(),
                     tag_key.size());
  sodium_memzero(tag_key.data(), tag_key.size());
  return tag;
}

void put_u32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}
std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

std::array<std::uint8_t, params_bytes> encode_params(const session_limits& l) {
  std::array<std::uint8_t, params_bytes> out{};
  put_u32(out.data(), l.frame_bytes_max);
  put_u32(out.data() + 4, l.window_bytes);
  put_u64(out.data() + 8, l.rekey_after_frames);
  put_u64(out.data() + 16, l.rekey_after_bytes);
  return out;
}

boost::system::result<session_limits> decode_params(
    std::span<const std::uint8_t, params_bytes> in) {
  session_limits l;
  l.frame_bytes_max = get_u32(in.data());
  l.window_bytes = get_u32(in.data() + 4);
  l.rekey_after_frames = get_u64(in.data() + 8);
  l.rekey_after_bytes = get_u64(in.data() + 16);
  if (l.frame_bytes_max < frame_bytes_floor || l.frame_bytes_max > frame_bytes_ceiling ||
      l.window_bytes < frame_bytes_floor || l.rekey_after_frames == 0 || l.rekey_after_bytes == 0) {
    return make_error_code(errc::bad_parameters);
  }
  return l;
}

// DH; false for a low-order peer point (libsodium returns -1 when the result is all zeros).
[[nodiscard]] bool dh(std::array<std::uint8_t, 32>& out, const std::array<std::uint8_t, 32>& secret,
                      const std::uint8_t* remote_public) {
  return crypto_scalarmult(out.data(), secret.data(), remote_public) == 0;
}

bool allowed(const handshake_config& config, const public_key& key) {
  if (config.allowlist.empty()) return true;
  return std::any_of(config.allowlist.begin(), config.allowlist.end(), [&](const public_key& k) {
    return sodium_memcmp(k.data(), key.data(), key.size()) == 0;
  });
}

void init_state(detail::symmetric_state& state, const handshake_config& config) {
  auto psk = psk_of(config);
  state.mix_key(psk);
  state.mix_hash(psk_tag(config, name_bytes()));  // binds "which mesh" into the transcript too
  sodium_memzero(psk.data(), psk.size());
}

}  // namespace

session::~session() {
  sodium_memzero(send_key.data(), send_key.size());
  sodium_memzero(receive_key.data(), receive_key.size());
}

// ---------------------------------------------------------------------------------------------

handshake_initiator::handshake_initiator(const identity& self, const handshake_config& config)
    : self_(self), config_(config), state_(name_bytes()), ephemeral_(identity::generate()) {
  init_state(state_, config_);
}

std::array<std::uint8_t, handshake_msg1_bytes> handshake_initiator::write_message1() {
  MWS_ASSERT(step_ == 0);
  step_ = 1;
  caps_ = local_caps(config_);
  std::array<std::uint8_t, handshake_msg1_bytes> msg{};
  std::memcpy(msg.data(), msg1_magic.data(), 4);
  msg[4] = caps_;
  std::memcpy(msg.data() + 5, ephemeral_.public_key_bytes().data(), 32);
  const auto tag = psk_tag(config_, std::span(msg.data(), 37));
  std::memcpy(msg.data() + 37, tag.data(), tag.size());
  state_.mix_hash(std::span(msg.data(), 37));
  return msg;
}

boost::system::result<std::array<std::uint8_t, handshake_msg3_bytes>>
handshake_initiator::read_message2(std::span<const std::uint8_t> msg2) {
  MWS_ASSERT(step_ == 1);
  step_ = -1;  // any failure leaves the state unusable
  if (msg2.size() != handshake_msg2_bytes || msg2[0] > 1) {
    return make_error_code(errc::handshake_bad_message);
  }
  const std::uint8_t remote_caps = msg2[0];
  std::memcpy(remote_ephemeral_.data(), msg2.data() + 1, 32);
  state_.mix_hash(msg2.first(33));
  std::array<std::uint8_t, 32> shared{};
  if (!dh(shared, ephemeral_.secret_key_bytes(), remote_ephemeral_.data())) {
    return make_error_code(errc::weak_public_key);
  }
  state_.mix_key(shared);  // ee
  public_key remote_static{};
  if (!state_.decrypt_and_hash(msg2.subspan(33, 48), remote_static)) {
    return make_error_code(errc::handshake_auth_failed);
  }
  if (!dh(shared, ephemeral_.secret_key_bytes(), remote_static.data())) {
    return make_error_code(errc::weak_public_key);
  }
  state_.mix_key(shared);  // es
  std::array<std::uint8_t, params_bytes> params{};
  if (!state_.decrypt_and_hash(msg2.subspan(81, 40), params)) {
    return make_error_code(errc::handshake_auth_failed);
  }
  // Only now is the responder's static key proven; check it against our policy.
  if (config_.expected_peer &&
      sodium_memcmp(config_.expected_peer->data(), remote_static.data(), 32) != 0) {
    return make_error_code(errc::unexpected_peer);
  }
  if (!allowed(config_, remote_static)) return make_error_code(errc::peer_not_allowed);
  auto remote_limits = decode_params(params);
  if (!remote_limits) return remote_limits.error();

  std::array<std::uint8_t, handshake_msg3_bytes> msg3{};
  state_.encrypt_and_hash(self_.public_key_bytes(), std::span(msg3.data(), 48));
  if (!dh(shared, self_.secret_key_bytes(), remote_ephemeral_.data())) {
    return make_error_code(errc::weak_public_key);
  }
  state_.mix_key(shared);  // se
  state_.encrypt_and_hash(encode_params(config_.limits), std::span(msg3.data() + 48, 40));
  sodium_memzero(shared.data(), shared.size());

  result_.aead = (caps_ & remote_caps & 1) ? aead_kind::aes256gcm : aead_kind::chacha20poly1305;
  state_.split(result_.send_key, result_.receive_key);
  result_.remote_static = remote_static;
  result_.local = config_.limits;
  result_.remote = *remote_limits;
  result_.handshake_hash = state_.handshake_hash();
  step_ = 2;
  return msg3;
}

session handshake_initiator::finish() {
  MWS_ASSERT(step_ == 2);
  step_ = 3;
  return result_;
}

// ---------------------------------------------------------------------------------------------

handshake_responder::handshake_responder(const identity& self, const handshake_config& config)
    : self_(self), config_(config), state_(name_bytes()), ephemeral_(identity::generate()) {
  init_state(state_, config_);
}

boost::system::result<std::array<std::uint8_t, handshake_msg2_bytes>>
handshake_responder::read_message1(std::span<const std::uint8_t> msg1) {
  MWS_ASSERT(step_ == 0);
  step_ = -1;
  if (msg1.size() != handshake_msg1_bytes || std::memcmp(msg1.data(), msg1_magic.data(), 4) != 0 ||
      msg1[4] > 1) {
    return make_error_code(errc::handshake_bad_message);
  }
  const auto expected_tag = psk_tag(config_, msg1.first(37));
  if (sodium_memcmp(expected_tag.data(), msg1.data() + 37, 16) != 0) {
    return make_error_code(errc::psk_mismatch);
  }
  const std::uint8_t remote_caps = msg1[4];
  std::memcpy(remote_ephemeral_.data(), msg1.data() + 5, 32);
  state_.mix_hash(msg1.first(37));

  caps_ = local_caps(config_) & remote_caps;
  std::array<std::uint8_t, handshake_msg2_bytes> msg2{};
  msg2[0] = local_caps(config_);
  std::memcpy(msg2.data() + 1, ephemeral_.public_key_bytes().data(), 32);
  state_.mix_hash(std::span(msg2.data(), 33));
  std::array<std::uint8_t, 32> shared{};
  if (!dh(shared, ephemeral_.secret_key_bytes(), remote_ephemeral_.data())) {
    return make_error_code(errc::weak_public_key);
  }
  state_.mix_key(shared);  // ee
  state_.encrypt_and_hash(self_.public_key_bytes(), std::span(msg2.data() + 33, 48));
  if (!dh(shared, self_.secret_key_bytes(), remote_ephemeral_.data())) {
    return make_error_code(errc::weak_public_key);
  }
  state_.mix_key(shared);  // es
  state_.encrypt_and_hash(encode_params(config_.limits), std::span(msg2.data() + 81, 40));
  sodium_memzero(shared.data(), shared.size());
  step_ = 1;
  return msg2;
}

boost::system::result<session> handshake_responder::read_message3(
    std::span<const std::uint8_t> msg3) {
  MWS_ASSERT(step_ == 1);
  step_ = -1;
  if (msg3.size() != handshake_msg3_bytes) return make_error_code(errc::handshake_bad_message);
  public_key remote_static{};
  if (!state_.decrypt_and_hash(msg3.first(48), remote_static)) {
    return make_error_code(errc::handshake_auth_failed);
  }
  std::array<std::uint8_t, 32> shared{};
  if (!dh(shared, ephemeral_.secret_key_bytes(), remote_static.data())) {
    return make_error_code(errc::weak_public_key);
  }
  state_.mix_key(shared);  // se
  sodium_memzero(shared.data(), shared.size());
  std::array<std::uint8_t, params_bytes> params{};
  if (!state_.decrypt_and_hash(msg3.subspan(48, 40), params)) {
    return make_error_code(errc::handshake_auth_failed);
  }
  if (!allowed(config_, remote_static)) return make_error_code(errc::peer_not_allowed);
  auto remote_limits = decode_params(params);
  if (!remote_limits) return remote_limits.error();

  session out;
  out.aead = (caps_ & 1) ? aead_kind::aes256gcm : aead_kind::chacha20poly1305;
  state_.split(out.receive_key, out.send_key);
  out.remote_static = remote_static;
  out.local = config_.limits;
  out.remote = *remote_limits;
  out.handshake_hash = state_.handshake_hash();
  step_ = 2;
  return out;
}

}  // namespace mws::transport
