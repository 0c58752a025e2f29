#include "gossip/membership_codec.hpp"

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>

#include "gossip/membership_generated.h"

namespace mws::gossip {
namespace {

node_key key(std::uint8_t b) {
  node_key k;
  k.bytes.fill(b);
  return k;
}

member_update row(std::uint8_t b, member_state st = member_state::alive) {
  return {key(b), "10.0.0." + std::to_string(b) + ":7000", b * 3u, st,
          key(static_cast<std::uint8_t>(b + 1))};
}

template <class T>
T round_trip(const T& m) {
  const auto bytes = encode_membership(swim::message{m});
  auto back = decode_membership(bytes);
  REQUIRE(back.has_value());
  REQUIRE(std::holds_alternative<T>(*back));
  return std::get<T>(*back);
}

TEST_CASE("membership codec: every message kind survives a round trip") {
  const auto p = round_trip(swim::ping{7, key(9), {row(1), row(2, member_state::suspect)}});
  CHECK(p.seq == 7);
  CHECK(p.target == key(9));
  CHECK(p.updates == std::vector<member_update>{row(1), row(2, member_state::suspect)});
  CHECK(round_trip(swim::ack{8, {row(3, member_state::dead)}}).updates.front() ==
        row(3, member_state::dead));
  CHECK(round_trip(swim::ping_req{9, row(4)}).target == row(4));
  CHECK(round_trip(swim::nack{10}).seq == 10);
  CHECK(round_trip(swim::gossip{{row(7), row(8, member_state::left)}}).updates ==
        std::vector<member_update>{row(7), row(8, member_state::left)});
  const auto pp = round_trip(swim::push_pull{true, false, {row(5, member_state::left), row(6)}});
  CHECK(pp.join);
  CHECK_FALSE(pp.reply);
  CHECK(pp.members.size() == 2);
  CHECK(pp.members[0] == row(5, member_state::left));
}

TEST_CASE("membership codec: truncated, garbage and wrong-identifier bytes are malformed") {
  const auto bytes = encode_membership(swim::message{swim::ping{1, key(2), {row(3)}}});
  // (FlatBuffers cannot notice a cut through trailing padding; the transport's frame length
  // guards the end of the message.)
  for (std::size_t cut : {std::size_t{0}, std::size_t{3}, std::size_t{12}, bytes.size() / 2}) {
    CAPTURE(cut);
    auto r = decode_membership(std::span(bytes).first(cut));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::malformed);
  }
  std::vector<std::uint8_t> garbage(200);
  for (std::size_t i = 0; i < garbage.size(); ++i)
    garbage[i] = static_cast<std::uint8_t>(i * 37 + 11);
  CHECK(decode_membership(garbage).error() == errc::malformed);
  auto other = bytes;
  other[4] = 'X';  // the file identifier "MWSM" sits at bytes 4..7
  CHECK(decode_membership(other).error() == errc::malformed);
}

TEST_CASE("membership codec: bounds on size, rows, addresses and states are enforced") {
  std::vector<member_update> many(70, row(1));
  CHECK(decode_membership(encode_membership(swim::message{swim::ack{1, many}})).error() ==
        errc::too_large);
  membership_decode_limits tight;
  tight.rows_max = 3;
  // Beyond rows_max the Verifier's table limit already refuses the buffer.
  CHECK(decode_membership(encode_membership(swim::message{swim::push_pull{false, false, many}}),
                          tight)
            .error() == errc::malformed);
  tight.message_bytes_max = 16;
  CHECK(decode_membership(encode_membership(swim::message{swim::nack{1}}), tight).error() ==
        errc::too_large);
  member_update long_address = row(1);
  long_address.address.assign(max_address_bytes + 1, 'a');
  CHECK(decode_membership(encode_membership(swim::message{swim::ping_req{1, long_address}}))
            .error() == errc::out_of_range);

  // Hand-built buffers: an unknown state, a missing key, an empty union.
  auto build = [](auto make_body) {
    flatbuffers::FlatBufferBuilder b;
    auto [type, body] = make_body(b);
    swim_wire::FinishMessageBuffer(b, swim_wire::CreateMessage(b, type, body));
    return std::vector<std::uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  };
  const auto bad_state = build([](flatbuffers::FlatBufferBuilder& b) {
    swim_wire::Key k;
    auto u = swim_wire::CreateUpdate(b, &k, b.CreateString("a"), 1,
                                     static_cast<swim_wire::State>(9), &k);
    return std::pair{swim_wire::Body::PingReq, swim_wire::CreatePingReq(b, 1, u).Union()};
  });
  CHECK(decode_membership(bad_state).error() == errc::out_of_range);
  const auto no_key = build([](flatbuffers::FlatBufferBuilder& b) {
    return std::pair{swim_wire::Body::Ping, swim_wire::CreatePing(b, 1, nullptr).Union()};
  });
  CHECK(decode_membership(no_key).error() == errc::malformed);
  const auto empty = build([](flatbuffers::FlatBufferBuilder&) {
    return std::pair{swim_wire::Body::NONE, flatbuffers::Offset<void>()};
  });
  CHECK(decode_membership(empty).error() == errc::bad_kind);
}

}  // namespace
}  // namespace mws::gossip
