#include "transport/detail/frame.hpp"

#include <vector>

#include <doctest/doctest.h>

#include "transport/error.hpp"

namespace mws::transport::detail {
namespace {

struct wire_frame {
  header_bytes header{};
  std::vector<std::uint8_t> body;
  std::array<std::uint8_t, tag_bytes> tag{};
};

aead_key test_key() {
  aead_key k{};
  for (std::size_t i = 0; i < k.size(); ++i)
    k[i] = static_cast<std::uint8_t>(3 * i + 1);
  return k;
}

std::vector<aead_kind> kinds() {
  std::vector<aead_kind> out{aead_kind::chacha20poly1305};
  if (crypto_aead_aes256gcm_is_available() == 1) out.push_back(aead_kind::aes256gcm);
  return out;
}

wire_frame seal(frame_sealer& s, frame_type type, const std::vector<std::uint8_t>& plain) {
  wire_frame f;
  f.body.resize(plain.size());
  s.seal(type, plain.data(), plain.size(), f.body.data(), f.header, f.tag);
  return f;
}

// check_header + open; returns the error or {} with `plain` filled.
boost::system::error_code open(frame_opener& o, wire_frame f, std::vector<std::uint8_t>& plain) {
  auto parsed = o.check_header(f.header);
  if (!parsed) return parsed.error();
  if (auto ec = o.open(*parsed, f.header, f.body, f.tag.data())) return ec;
  plain = f.body;
  return {};
}

TEST_CASE("frames round-trip and rekey at the same points on both ends") {
  for (const aead_kind kind : kinds()) {
    frame_sealer sealer(kind, test_key(), 3, 1000);
    frame_opener opener(kind, test_key(), 3, 1000, 4096);
    for (std::size_t i = 0; i < 20; ++i) {
      std::vector<std::uint8_t> plain(i * 97 % 700, static_cast<std::uint8_t>(i));
      auto f = seal(sealer, frame_type::data, plain);
      if (!plain.empty()) CHECK(f.body != plain);  // encrypted
      std::vector<std::uint8_t> got;
      REQUIRE_FALSE(open(opener, f, got));
      CHECK(got == plain);
    }
    CHECK(sealer.rekeys() == opener.rekeys());
    CHECK(sealer.rekeys() >= 20 / 3);
    CHECK(sealer.counter() == 20);
  }
}

TEST_CASE("AES-256-GCM frames are standard GCM: libsodium opens what the sealer wrote") {
  if (crypto_aead_aes256gcm_is_available() != 1) return;  // no AES-NI: never negotiated
  frame_sealer sealer(aead_kind::aes256gcm, test_key(), 1u << 20, 1u << 30);
  const std::vector<std::uint8_t> plain(5000, 0x33);
  for (std::uint64_t counter = 0; counter < 3; ++counter) {
    auto f = seal(sealer, frame_type::data, plain);
    const auto key = test_key();
    const auto nonce = counter_nonce(counter);
    std::vector<std::uint8_t> out(plain.size());
    REQUIRE(crypto_aead_aes256gcm_decrypt_detached(out.data(), nullptr, f.body.data(),
                                                   f.body.size(), f.tag.data(), f.header.data(),
                                                   f.header.size(), nonce.data(), key.data()) == 0);
    CHECK(out == plain);
  }
}

TEST_CASE("ChaCha20-Poly1305 frames are the IETF AEAD: libsodium opens what the sealer wrote") {
  frame_sealer sealer(aead_kind::chacha20poly1305, test_key(), 1u << 20, 1u << 30);
  const std::vector<std::uint8_t> plain(5000, 0x44);
  for (std::uint64_t counter = 0; counter < 3; ++counter) {
    auto f = seal(sealer, frame_type::data, plain);
    const auto key = test_key();
    const auto nonce = counter_nonce(counter);
    std::vector<std::uint8_t> out(plain.size());
    REQUIRE(crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                out.data(), nullptr, f.body.data(), f.body.size(), f.tag.data(), f.header.data(),
                f.header.size(), nonce.data(), key.data()) == 0);
    CHECK(out == plain);
  }
}

TEST_CASE("a rekeyed receiver cannot open frames of the old key") {
  frame_sealer old_key(aead_kind::chacha20poly1305, test_key(), 1000, 1u << 30);
  frame_sealer fresh(aead_kind::chacha20poly1305, test_key(), 1, 1u << 30);
  frame_opener opener(aead_kind::chacha20poly1305, test_key(), 1, 1u << 30, 4096);
  std::vector<std::uint8_t> got;
  REQUIRE_FALSE(open(opener, seal(fresh, frame_type::data, {1, 2}), got));
  (void)seal(old_key, frame_type::data, {1, 2});
  CHECK(open(opener, seal(old_key, frame_type::data, {3}), got) ==
        make_error_code(errc::frame_auth_failed));
}

TEST_CASE("tampered, replayed, reordered, oversized and malformed frames get their own errors") {
  for (const aead_kind kind : kinds()) {
    frame_sealer sealer(kind, test_key(), 1u << 20, 1u << 30);
    const std::vector<std::uint8_t> plain(300, 0x5a);
    const auto f0 = seal(sealer, frame_type::data, plain);
    const auto f1 = seal(sealer, frame_type::data_end, plain);
    std::vector<std::uint8_t> got;
    auto fresh = [&] { return frame_opener(kind, test_key(), 1u << 20, 1u << 30, 4096); };

    SUBCASE("flipped ciphertext bit") {
      auto o = fresh();
      auto bad = f0;
      bad.body[17] ^= 0x04;
      CHECK(open(o, bad, got) == make_error_code(errc::frame_auth_failed));
    }
    SUBCASE("flipped tag bit") {
      auto o = fresh();
      auto bad = f0;
      bad.tag[0] ^= 0x80;
      CHECK(open(o, bad, got) == make_error_code(errc::frame_auth_failed));
    }
    SUBCASE("changed type (authenticated header)") {
      auto o = fresh();
      auto bad = f0;
      bad.header[4] = static_cast<std::uint8_t>(frame_type::data_end);
      CHECK(open(o, bad, got) == make_error_code(errc::frame_auth_failed));
    }
    SUBCASE("replayed frame") {
      auto o = fresh();
      REQUIRE_FALSE(open(o, f0, got));
      CHECK(open(o, f0, got) == make_error_code(errc::frame_replayed));
    }
    SUBCASE("reordered frames") {
      auto o = fresh();
      CHECK(open(o, f1, got) == make_error_code(errc::frame_reordered));
    }
    SUBCASE("oversized length prefix") {
      auto o = fresh();
      auto bad = f0;
      bad.header[0] = 0xff;
      bad.header[1] = 0xff;
      bad.header[2] = 0xff;
      bad.header[3] = 0xff;
      CHECK(open(o, bad, got) == make_error_code(errc::frame_too_large));
      auto just_over = f0;
      const std::uint32_t over = 4096 + tag_bytes + 1;
      for (int i = 0; i < 4; ++i)
        just_over.header[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(over >> (8 * i));
      CHECK(open(o, just_over, got) == make_error_code(errc::frame_too_large));
    }
    SUBCASE("length below a tag, unknown type, reserved bits, control sizes") {
      auto o = fresh();
      auto bad = f0;
      bad.header[0] = 15;
      bad.header[1] = bad.header[2] = bad.header[3] = 0;
      CHECK(open(o, bad, got) == make_error_code(errc::frame_malformed));
      bad = f0;
      bad.header[4] = 99;
      CHECK(open(o, bad, got) == make_error_code(errc::frame_malformed));
      bad = f0;
      bad.header[6] = 1;
      CHECK(open(o, bad, got) == make_error_code(errc::frame_malformed));
      bad = f0;
      bad.header[4] = static_cast<std::uint8_t>(frame_type::ping);  // ping must be empty
      CHECK(open(o, bad, got) == make_error_code(errc::frame_malformed));
    }
  }
}

}  // namespace
}  // namespace mws::transport::detail
