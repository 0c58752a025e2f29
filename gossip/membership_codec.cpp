#include "gossip/membership_codec.hpp"

#include <cstring>

#include <flatbuffers/flatbuffers.h>

#include "gossip/membership_generated.h"

namespace mws::gossip {
namespace {

namespace fb = swim_wire;
using offset_rows = flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Update>>>;

fb::Key to_wire(const node_key& k) {
  return fb::Key(flatbuffers::span<const std::uint8_t, 32>(k.bytes.data(), k.bytes.size()));
}

node_key from_wire(const fb::Key& w) {
  node_key k;
  std::memcpy(k.bytes.data(), w.bytes()->Data(), k.bytes.size());
  return k;
}

flatbuffers::Offset<fb::Update> encode_row(flatbuffers::FlatBufferBuilder& b,
                                           const member_update& u) {
  const fb::Key id = to_wire(u.id);
  const fb::Key accuser = to_wire(u.accuser);
  return fb::CreateUpdate(b, &id, b.CreateString(u.address), u.incarnation,
                          static_cast<fb::State>(u.state), &accuser);
}

offset_rows encode_rows(flatbuffers::FlatBufferBuilder& b, const std::vector<member_update>& rows) {
  std::vector<flatbuffers::Offset<fb::Update>> out;
  out.reserve(rows.size());
  for (const auto& u : rows)
    out.push_back(encode_row(b, u));
  return b.CreateVector(out);
}

boost::system::result<member_update> decode_row(const fb::Update* w) {
  if (w == nullptr || w->id() == nullptr || w->accuser() == nullptr) return errc::malformed;
  const auto state = static_cast<std::uint8_t>(w->state());
  if (state > static_cast<std::uint8_t>(member_state::left)) return errc::out_of_range;
  member_update u;
  u.id = from_wire(*w->id());
  u.accuser = from_wire(*w->accuser());
  u.incarnation = w->incarnation();
  u.state = static_cast<member_state>(state);
  if (w->address() != nullptr) {
    if (w->address()->size() > max_address_bytes) return errc::out_of_range;
    u.address.assign(w->address()->c_str(), w->address()->size());
  }
  return u;
}

boost::system::result<std::vector<member_update>> decode_rows(
    const flatbuffers::Vector<flatbuffers::Offset<fb::Update>>* rows, std::size_t max) {
  std::vector<member_update> out;
  if (rows == nullptr) return out;
  if (rows->size() > max) return errc::too_large;
  out.reserve(rows->size());
  for (const fb::Update* w : *rows) {
    auto u = decode_row(w);
    if (!u) return u.error();
    out.push_back(std::move(*u));
  }
  return out;
}

}  // namespace

std::vector<std::uint8_t> encode_membership(const swim::message& msg) {
  flatbuffers::FlatBufferBuilder b(256);
  const auto [type, body] = std::visit(
      [&](const auto& m) -> std::pair<fb::Body, flatbuffers::Offset<void>> {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, swim::ping>) {
          const fb::Key target = to_wire(m.target);
          return {fb::Body::Ping,
                  fb::CreatePing(b, m.seq, &target, encode_rows(b, m.updates)).Union()};
        } else if constexpr (std::is_same_v<T, swim::ack>) {
          return {fb::Body::Ack, fb::CreateAck(b, m.seq, encode_rows(b, m.updates)).Union()};
        } else if constexpr (std::is_same_v<T, swim::ping_req>) {
          return {fb::Body::PingReq, fb::CreatePingReq(b, m.seq, encode_row(b, m.target)).Union()};
        } else if constexpr (std::is_same_v<T, swim::nack>) {
          return {fb::Body::Nack, fb::CreateNack(b, m.seq).Union()};
        } else if constexpr (std::is_same_v<T, swim::gossip>) {
          return {fb::Body::Gossip, fb::CreateGossip(b, encode_rows(b, m.updates)).Union()};
        } else {
          return {fb::Body::PushPull,
                  fb::CreatePushPull(b, m.join, m.reply, encode_rows(b, m.members)).Union()};
        }
      },
      msg);
  fb::FinishMessageBuffer(b, fb::CreateMessage(b, type, body));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

boost::system::result<swim::message> decode_membership(std::span<const std::uint8_t> bytes,
                                                       const membership_decode_limits& limits) {
  if (bytes.size() > limits.message_bytes_max) return errc::too_large;
  // Each row is a table; a push-pull holds at most rows_max of them.
  const auto tables_max =
      static_cast<unsigned>(std::min<std::size_t>(limits.rows_max + 8, 1u << 30));
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), limits.verifier_depth_max, tables_max);
  if (!fb::VerifyMessageBuffer(verifier)) return errc::malformed;
  const fb::Message* m = fb::GetMessage(bytes.data());
  switch (m->body_type()) {
    case fb::Body::Ping: {
      const auto* p = m->body_as_Ping();
      if (p->target() == nullptr) return errc::malformed;
      auto updates = decode_rows(p->updates(), limits.updates_max);
      if (!updates) return updates.error();
      return swim::message{swim::ping{p->seq(), from_wire(*p->target()), std::move(*updates)}};
    }
    case fb::Body::Ack: {
      const auto* a = m->body_as_Ack();
      auto updates = decode_rows(a->updates(), limits.updates_max);
      if (!updates) return updates.error();
      return swim::message{swim::ack{a->seq(), std::move(*updates)}};
    }
    case fb::Body::PingReq: {
      const auto* r = m->body_as_PingReq();
      auto target = decode_row(r->target());
      if (!target) return target.error();
      return swim::message{swim::ping_req{r->seq(), std::move(*target)}};
    }
    case fb::Body::Nack:
      return swim::message{swim::nack{m->body_as_Nack()->seq()}};
    case fb::Body::PushPull: {
      const auto* p = m->body_as_PushPull();
      auto rows = decode_rows(p->members(), limits.rows_max);
      if (!rows) return rows.error();
      return swim::message{swim::push_pull{p->join(), p->reply(), std::move(*rows)}};
    }
    case fb::Body::Gossip: {
      auto updates = decode_rows(m->body_as_Gossip()->updates(), limits.updates_max);
      if (!updates) return updates.error();
      return swim::message{swim::gossip{std::move(*updates)}};
    }
    case fb::Body::NONE:
      break;
  }
  return errc::bad_kind;
}

}  // namespace mws::gossip
