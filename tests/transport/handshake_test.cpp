#include "transport/handshake.hpp"

#include <doctest/doctest.h>

#include "transport/error.hpp"

namespace mws::transport {
namespace {

struct outcome {
  boost::system::error_code initiator_error;
  boost::system::error_code responder_error;
  std::optional<session> initiator;
  std::optional<session> responder;
};

// Runs both state machines against each other; `tamper` may change a message in flight
// (index 1, 2 or 3).
template <class Tamper>
outcome handshake(const identity& i_id, const handshake_config& i_cfg, const identity& r_id,
                  const handshake_config& r_cfg, Tamper tamper) {
  outcome out;
  handshake_initiator initiator(i_id, i_cfg);
  handshake_responder responder(r_id, r_cfg);
  auto msg1 = initiator.write_message1();
  tamper(1, std::span<std::uint8_t>(msg1));
  auto msg2 = responder.read_message1(msg1);
  if (!msg2) {
    out.responder_error = msg2.error();
    return out;
  }
  tamper(2, std::span<std::uint8_t>(*msg2));
  auto msg3 = initiator.read_message2(*msg2);
  if (!msg3) {
    out.initiator_error = msg3.error();
    return out;
  }
  out.initiator = initiator.finish();
  tamper(3, std::span<std::uint8_t>(*msg3));
  auto done = responder.read_message3(*msg3);
  if (!done) {
    out.responder_error = done.error();
    return out;
  }
  out.responder = *done;
  return out;
}

outcome handshake(const identity& i_id, const handshake_config& i_cfg, const identity& r_id,
                  const handshake_config& r_cfg) {
  return handshake(i_id, i_cfg, r_id, r_cfg, [](int, std::span<std::uint8_t>) {});
}

TEST_CASE("both sides derive mirrored keys and learn each other's static key") {
  const identity a = identity::generate(), b = identity::generate();
  handshake_config ca, cb;
  ca.limits.frame_bytes_max = 1u << 20;
  cb.limits.window_bytes = 8u << 20;
  const auto r = handshake(a, ca, b, cb);
  REQUIRE(r.initiator);
  REQUIRE(r.responder);
  CHECK(r.initiator->send_key == r.responder->receive_key);
  CHECK(r.initiator->receive_key == r.responder->send_key);
  CHECK(r.initiator->send_key != r.initiator->receive_key);
  CHECK(r.initiator->handshake_hash == r.responder->handshake_hash);
  CHECK(r.initiator->remote_static == b.public_key_bytes());
  CHECK(r.responder->remote_static == a.public_key_bytes());
  CHECK(r.responder->remote.frame_bytes_max == (1u << 20));
  CHECK(r.initiator->remote.window_bytes == (8u << 20));
  CHECK(r.initiator->aead == r.responder->aead);
  const bool aes = crypto_aead_aes256gcm_is_available() == 1;
  CHECK(r.initiator->aead == (aes ? aead_kind::aes256gcm : aead_kind::chacha20poly1305));
}

TEST_CASE("ChaCha20-Poly1305 is chosen when either side does not offer AES-256-GCM") {
  const identity a = identity::generate(), b = identity::generate();
  handshake_config with_aes, without;
  without.offer_aes256gcm = false;
  for (int side = 0; side < 2; ++side) {
    const auto r =
        side == 0 ? handshake(a, without, b, with_aes) : handshake(a, with_aes, b, without);
    REQUIRE(r.initiator);
    REQUIRE(r.responder);
    CHECK(r.initiator->aead == aead_kind::chacha20poly1305);
    CHECK(r.responder->aead == aead_kind::chacha20poly1305);
  }
}

TEST_CASE("a pre-shared key mismatch is refused by the responder as psk_mismatch") {
  const identity a = identity::generate(), b = identity::generate();
  handshake_config with_psk, other_psk, none;
  with_psk.mesh_psk = std::array<std::uint8_t, 32>{1, 2, 3};
  other_psk.mesh_psk = std::array<std::uint8_t, 32>{1, 2, 4};
  CHECK(handshake(a, with_psk, b, other_psk).responder_error ==
        make_error_code(errc::psk_mismatch));
  CHECK(handshake(a, none, b, with_psk).responder_error == make_error_code(errc::psk_mismatch));
  CHECK(handshake(a, with_psk, b, none).responder_error == make_error_code(errc::psk_mismatch));
  const auto same = handshake(a, with_psk, b, with_psk);
  CHECK(same.responder.has_value());
}

TEST_CASE("a mesh pre-shared key changes the transcript and so every derived key") {
  const identity a = identity::generate(), b = identity::generate();
  handshake_config p1, p2;
  p1.mesh_psk = std::array<std::uint8_t, 32>{7};
  p2.mesh_psk = std::array<std::uint8_t, 32>{7};
  const auto r1 = handshake(a, p1, b, p2);
  handshake_config none;
  const auto r2 = handshake(a, none, b, none);
  REQUIRE(r1.initiator);
  REQUIRE(r2.initiator);
  CHECK(r1.initiator->handshake_hash != r2.initiator->handshake_hash);
}

TEST_CASE("allowlists refuse unknown static keys on either side") {
  const identity a = identity::generate(), b = identity::generate(), c = identity::generate();
  handshake_config open_cfg, only_c;
  only_c.allowlist = {c.public_key_bytes()};
  CHECK(handshake(a, open_cfg, b, only_c).responder_error ==
        make_error_code(errc::peer_not_allowed));
  CHECK(handshake(a, only_c, b, open_cfg).initiator_error ==
        make_error_code(errc::peer_not_allowed));
  handshake_config allows_a;
  allows_a.allowlist = {c.public_key_bytes(), a.public_key_bytes()};
  CHECK(handshake(a, open_cfg, b, allows_a).responder.has_value());
  handshake_config expects_c;
  expects_c.expected_peer = c.public_key_bytes();
  CHECK(handshake(a, expects_c, b, open_cfg).initiator_error ==
        make_error_code(errc::unexpected_peer));
}

TEST_CASE("every changed byte of every handshake message makes the handshake fail") {
  const identity a = identity::generate(), b = identity::generate();
  handshake_config cfg;
  for (int message = 1; message <= 3; ++message) {
    const std::size_t size = message == 1   ? handshake_msg1_bytes
                             : message == 2 ? handshake_msg2_bytes
                                            : handshake_msg3_bytes;
    for (std::size_t at = 0; at < size; ++at) {
      const auto r = handshake(a, cfg, b, cfg, [&](int m, std::span<std::uint8_t> bytes) {
        if (m == message) bytes[at] ^= 0x01;
      });
      INFO("message ", message, " byte ", at);
      CHECK_FALSE(r.responder.has_value());
      CHECK((r.initiator_error || r.responder_error));
    }
  }
}

TEST_CASE("malformed handshake messages are refused by size, magic and version") {
  const identity b = identity::generate();
  handshake_config cfg;
  {
    handshake_responder r(b, cfg);
    std::vector<std::uint8_t> short_msg(handshake_msg1_bytes - 1);
    CHECK(r.read_message1(short_msg).error() == make_error_code(errc::handshake_bad_message));
  }
  {
    handshake_responder r(b, cfg);
    std::vector<std::uint8_t> garbage(handshake_msg1_bytes, 0xab);
    CHECK(r.read_message1(garbage).error() == make_error_code(errc::handshake_bad_message));
  }
  {
    const identity a = identity::generate();
    handshake_initiator i(a, cfg);
    auto msg1 = i.write_message1();
    msg1[3] = 2;  // a future version
    handshake_responder r(b, cfg);
    CHECK(r.read_message1(msg1).error() == make_error_code(errc::handshake_bad_message));
  }
}

TEST_CASE("a low-order ephemeral key is refused as weak_public_key") {
  const identity b = identity::generate();
  handshake_config cfg;
  const identity a = identity::generate();
  handshake_initiator i(a, cfg);
  auto msg1 = i.write_message1();
  std::fill(msg1.begin() + 5, msg1.begin() + 37, std::uint8_t{0});  // the all-zero point
  // Re-tag msg1 as a psk holder could: the tag is keyed by the (here all-zero) psk.
  handshake_responder probe(b, cfg);
  std::array<std::uint8_t, 32> tag_key{};
  const std::string_view label = "mws/1 psk tag";
  const std::array<std::uint8_t, 32> zero_psk{};
  crypto_generichash(tag_key.data(), tag_key.size(),
                     reinterpret_cast<const std::uint8_t*>(label.data()), label.size(),
                     zero_psk.data(), zero_psk.size());
  crypto_generichash(msg1.data() + 37, 16, msg1.data(), 37, tag_key.data(), tag_key.size());
  CHECK(probe.read_message1(msg1).error() == make_error_code(errc::weak_public_key));
}

TEST_CASE("announced limits outside the bounds are refused as bad_parameters") {
  const identity a = identity::generate(), b = identity::generate();
  handshake_config good, tiny_frames, no_rekey;
  tiny_frames.limits.frame_bytes_max = frame_bytes_floor - 1;
  no_rekey.limits.rekey_after_frames = 0;
  CHECK(handshake(a, tiny_frames, b, good).responder_error ==
        make_error_code(errc::bad_parameters));
  CHECK(handshake(a, good, b, no_rekey).initiator_error == make_error_code(errc::bad_parameters));
}

}  // namespace
}  // namespace mws::transport
