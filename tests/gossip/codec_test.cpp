#include "gossip/codec.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include <doctest/doctest.h>
#include <flatbuffers/flatbuffers.h>

#include "driver.hpp"
#include "gossip/rng.hpp"
#include "gossip/wire_generated.h"
#include "helpers.hpp"

namespace mws::gossip::test {
namespace {

const manifest spec = {{"layer.0.weight", gpu::dtype::f32, 5},
                       {"layer.0.bias", gpu::dtype::f16, 3},
                       {"embed", gpu::dtype::bf16, 2}};

struct fixture {
  std::unique_ptr<gpu::backend> backend = gpu::make_cpu_backend();

  payload_ptr payload(float base = 1.0f) {
    auto s = tensor_set::allocate(*backend, spec).value();
    for (std::size_t t = 0; t < spec.size(); ++t) {
      for (std::size_t k = 0; k < spec[t].numel; ++k) {
        set_element(s, t, k, base + static_cast<float>(t * 10 + k) * 0.25f);
      }
    }
    return std::make_shared<const tensor_set>(std::move(s));
  }

  message data_message() {
    message m;
    m.header = {message_kind::push_sum_running, 42, 3, 0, 0, 0.75, 41};
    m.tensors = payload();
    return m;
  }
};

// A header crafted field by field, for inputs the encoder would never produce.
struct crafted {
  std::uint8_t kind = 0;
  double weight = 1.0;
  std::uint64_t round = 0;
  std::uint32_t step = 0;
  std::uint32_t degree = 0;
  bool with_tensors = true;
  std::vector<std::tuple<const char*, std::uint8_t, std::uint64_t, std::uint64_t>> tensors = {
      {"layer.0.weight", 0, 5, 20}, {"layer.0.bias", 1, 3, 6}, {"embed", 2, 2, 4}};
};

std::vector<std::uint8_t> craft(const crafted& c) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<wire::Tensor>> ts;
  for (const auto& [name, dtype, numel, bytes] : c.tensors) {
    const auto n = name ? fbb.CreateString(name) : flatbuffers::Offset<flatbuffers::String>{};
    ts.push_back(wire::CreateTensor(fbb, n, static_cast<wire::DType>(dtype), numel, bytes));
  }
  const auto list = fbb.CreateVector(ts);
  wire::HeaderBuilder h(fbb);
  h.add_kind(static_cast<wire::Kind>(c.kind));
  h.add_weight(c.weight);
  h.add_round(c.round);
  h.add_step(c.step);
  h.add_degree(c.degree);
  if (c.with_tensors) h.add_tensors(list);
  fbb.Finish(h.Finish());
  const auto size = static_cast<std::uint32_t>(fbb.GetSize());
  std::size_t total = (wire_prefix_bytes + size + 7) / 8 * 8;
  if (c.with_tensors) {
    for (const auto& t : spec)
      total += (t.numel * gpu::dtype_size(t.type) + 7) / 8 * 8;
  }
  std::vector<std::uint8_t> out(total, 0);
  std::memcpy(out.data(), &size, 4);  // little-endian hosts only, like the test machines
  out[4] = static_cast<std::uint8_t>(wire_version);
  std::memcpy(out.data() + wire_prefix_bytes, fbb.GetBufferPointer(), size);
  // Tensor bytes as the manifest wants them (1.0 everywhere), each padded to 8.
  if (c.with_tensors) {
    std::size_t at = (wire_prefix_bytes + size + 7) / 8 * 8;
    for (const auto& t : spec) {
      for (std::size_t k = 0; k < t.numel; ++k) {
        if (t.type == gpu::dtype::f32) {
          const float one = 1.0f;
          std::memcpy(out.data() + at + 4 * k, &one, 4);
        } else {
          const std::uint16_t one =
              t.type == gpu::dtype::f16 ? gpu::f32_to_f16(1.0f) : gpu::f32_to_bf16(1.0f);
          std::memcpy(out.data() + at + 2 * k, &one, 2);
        }
      }
      at += (t.numel * gpu::dtype_size(t.type) + 7) / 8 * 8;
    }
  }
  return out;
}

error_code decode_error(std::span<const std::uint8_t> bytes, const decode_limits& l = {}) {
  auto r = decode(bytes, spec, nullptr, l);
  return r ? error_code{} : r.error();
}

TEST_CASE("codec: every kind survives encode -> decode bit for bit") {
  fixture f;
  for (std::uint8_t k = 0; k < message_kind_count; ++k) {
    const auto kind = static_cast<message_kind>(k);
    CAPTURE(to_string(kind));
    message m;
    m.header = {kind, std::uint64_t{1000} + k, 7, 3, 4, 2.5, 99};
    if (carries_tensors(kind)) m.tensors = f.payload(static_cast<float>(k));
    const auto bytes = encode(m, spec);
    CHECK(bytes.size() == wire_size(m, spec));
    CHECK(bytes.size() % 8 == 0);
    auto keep = std::make_shared<std::vector<std::uint8_t>>(bytes);
    auto back = decode(*keep, spec, keep);
    REQUIRE(back.has_value());
    CHECK(back->header.kind == kind);
    CHECK(back->header.seq == m.header.seq);
    CHECK(back->header.round == 7);
    CHECK(back->header.step == 3);
    CHECK(back->header.degree == 4);
    CHECK(back->header.weight == 2.5);
    CHECK(back->header.ack == 99);
    CHECK(static_cast<bool>(back->tensors) == carries_tensors(kind));
    if (!back->tensors) continue;
    CHECK(!back->tensors->borrowed());
    for (std::size_t t = 0; t < spec.size(); ++t) {
      const auto a = (*m.tensors)[t];
      const auto b = (*back->tensors)[t];
      CHECK(b.type == a.type);
      REQUIRE(b.numel == a.numel);
      CHECK(std::memcmp(a.data, b.data, a.bytes()) == 0);
      // Views point into the bytes: no copy.
      const auto* p = static_cast<const std::uint8_t*>(b.data);
      CHECK(p >= keep->data());
      CHECK(p + b.bytes() <= keep->data() + keep->size());
    }
  }
}

TEST_CASE("codec: the header alone announces the layout, for streaming tensor bytes") {
  fixture f;
  const auto m = f.data_message();
  wire_layout layout;
  const auto head = encode_header(m, spec, &layout);
  const auto whole = encode(m, spec);
  CHECK(head.size() == layout.header_bytes);
  CHECK(std::equal(head.begin(), head.end(), whole.begin()));
  auto h = decode_header(head, spec);
  REQUIRE(h.has_value());
  CHECK(h->layout.total_bytes == whole.size());
  CHECK(h->layout.tensor_offsets == layout.tensor_offsets);
  CHECK(check_tensor_bytes(whole, *h, spec) == error_code{});
  CHECK(check_tensor_bytes(head, *h, spec) == errc::truncated);
}

TEST_CASE("codec: every truncation is refused") {
  fixture f;
  const auto bytes = encode(f.data_message(), spec);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    const auto ec = decode_error(std::span(bytes).first(n));
    CHECK(ec == errc::truncated);
  }
  auto longer = bytes;
  longer.push_back(0);
  CHECK(decode_error(longer) == errc::trailing_bytes);
}

TEST_CASE("codec: random garbage is refused without a crash") {
  rng r(2024);
  std::vector<std::uint8_t> buf;
  std::size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    buf.resize(static_cast<std::size_t>(r.below(600)));
    for (auto& b : buf)
      b = static_cast<std::uint8_t>(r.next());
    if (i % 2 == 0 && buf.size() >= 8) {  // a plausible prefix, so the Verifier is reached
      const auto len = static_cast<std::uint32_t>(buf.size() - 8 - r.below(buf.size() - 7));
      std::memcpy(buf.data(), &len, 4);
      buf[4] = 1;
      buf[5] = buf[6] = buf[7] = 0;
    }
    if (!decode_error(buf)) ++accepted;
  }
  CHECK(accepted == 0);
}

TEST_CASE("codec: flipping any single byte of a valid message never crashes") {
  fixture f;
  const auto bytes = encode(f.data_message(), spec);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (std::uint8_t flip : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xff}}) {
      auto b = bytes;
      b[i] ^= flip;
      auto r = decode(b, spec);
      if (r && r->tensors) {  // a flip that still decodes only changed a value, never a size
        CHECK(r->tensors->size() == spec.size());
      }
    }
  }
}

TEST_CASE("codec: limits refuse oversized headers and messages") {
  fixture f;
  const auto bytes = encode(f.data_message(), spec);
  decode_limits small_header;
  small_header.header_bytes_max = 16;
  CHECK(decode_error(bytes, small_header) == errc::too_large);
  decode_limits small_message;
  small_message.message_bytes_max = bytes.size() - 1;
  CHECK(decode_error(bytes, small_message) == errc::too_large);
  decode_limits few_tables;
  few_tables.verifier_tables_max = 2;
  CHECK(decode_error(bytes, few_tables) == errc::malformed);
  // A length prefix of 4 GiB - 1 with a few bytes behind it: refused before any allocation.
  std::vector<std::uint8_t> huge = {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0};
  CHECK(decode_error(huge) == errc::too_large);
}

TEST_CASE("codec: refuses meaning that does not match the manifest, with specific errors") {
  CHECK(decode_error(craft({})) == error_code{});  // the crafted baseline is valid

  crafted byte_size;
  std::get<3>(byte_size.tensors[0]) = 21;
  CHECK(decode_error(craft(byte_size)) == errc::wrong_byte_size);

  crafted dtype;
  std::get<1>(dtype.tensors[0]) = 1;  // f16 where the manifest says f32
  CHECK(decode_error(craft(dtype)) == errc::wrong_dtype);
  crafted unknown_dtype;
  std::get<1>(unknown_dtype.tensors[2]) = 9;
  CHECK(decode_error(craft(unknown_dtype)) == errc::wrong_dtype);

  crafted name;
  std::get<0>(name.tensors[1]) = "layer.0.bias2";
  CHECK(decode_error(craft(name)) == errc::wrong_tensor_name);
  crafted no_name;
  std::get<0>(no_name.tensors[1]) = nullptr;
  CHECK(decode_error(craft(no_name)) == errc::wrong_tensor_name);

  crafted numel;
  std::get<2>(numel.tensors[0]) = 6;
  std::get<3>(numel.tensors[0]) = 24;
  CHECK(decode_error(craft(numel)) == errc::wrong_numel);
  crafted huge_numel;
  std::get<2>(huge_numel.tensors[0]) = std::numeric_limits<std::uint64_t>::max() / 2;
  CHECK(decode_error(craft(huge_numel)) == errc::wrong_numel);

  crafted count;
  count.tensors.pop_back();
  CHECK(decode_error(craft(count)) == errc::wrong_tensor_count);
  crafted missing;
  missing.with_tensors = false;
  CHECK(decode_error(craft(missing)) == errc::wrong_tensor_count);
  crafted control_with_tensors;
  control_with_tensors.kind = static_cast<std::uint8_t>(message_kind::pairwise_commit);
  CHECK(decode_error(craft(control_with_tensors)) == errc::wrong_tensor_count);

  crafted kind;
  kind.kind = 200;
  CHECK(decode_error(craft(kind)) == errc::bad_kind);
}

TEST_CASE("codec: refuses weights and counters out of range") {
  for (double w : {std::nan(""), std::numeric_limits<double>::infinity(), -1.0, 0.0}) {
    CAPTURE(w);
    crafted c;
    c.weight = w;
    CHECK(decode_error(craft(c)) == errc::bad_weight);
  }
  crafted control;
  control.kind = static_cast<std::uint8_t>(message_kind::pairwise_abort);
  control.weight = 0.0;
  control.with_tensors = false;
  control.tensors.clear();
  CHECK(decode_error(craft(control)) == error_code{});
  control.weight = std::numeric_limits<double>::infinity();
  CHECK(decode_error(craft(control)) == errc::bad_weight);

  crafted step;
  step.step = max_exact_step + 2;
  CHECK(decode_error(craft(step)) == errc::out_of_range);
  crafted round;
  round.round = ~std::uint64_t{0};
  CHECK(decode_error(craft(round)) == errc::out_of_range);
  crafted sync_no_degree;
  sync_no_degree.kind = static_cast<std::uint8_t>(message_kind::sync_value);
  CHECK(decode_error(craft(sync_no_degree)) == errc::out_of_range);
  crafted degree;
  degree.kind = static_cast<std::uint8_t>(message_kind::sync_value);
  degree.degree = max_peers + 1;
  CHECK(decode_error(craft(degree)) == errc::out_of_range);
}

TEST_CASE("codec: refuses non-finite tensor data in every dtype, unless told not to look") {
  const std::size_t f32_at = craft({}).size() - 8 - 8 - 24;  // layout: 24, 8, 8 bytes of tensors
  struct poison {
    std::size_t offset;
    std::vector<std::uint8_t> value;
  };
  const float nan = std::nanf("");
  std::vector<std::uint8_t> nan32(4);
  std::memcpy(nan32.data(), &nan, 4);
  for (const auto& p : {poison{f32_at + 8, nan32}, poison{f32_at + 24, {0x00, 0x7c}},  // f16 +inf
                        poison{f32_at + 32 + 2, {0xc0, 0x7f}}}) {                      // bf16 NaN
    auto bytes = craft({});
    std::memcpy(bytes.data() + p.offset, p.value.data(), p.value.size());
    CHECK(decode_error(bytes) == errc::non_finite_tensor);
    decode_limits lax;
    lax.check_finite = false;
    CHECK(decode_error(bytes, lax) == error_code{});
  }
}

TEST_CASE("codec: refuses non-zero padding, a wrong version and misaligned data") {
  auto bytes = craft({});
  bytes.back() = 1;  // padding after the last tensor (bf16 x 2 = 4 bytes, padded to 8)
  CHECK(decode_error(bytes) == errc::malformed);
  auto version = craft({});
  version[4] = 2;
  CHECK(decode_error(version) == errc::malformed);
  // The same bytes one byte off an aligned address: f32 data would be misaligned.
  const auto good = craft({});
  std::vector<std::uint8_t> shifted(good.size() + 1);
  std::memcpy(shifted.data() + 1, good.data(), good.size());
  CHECK(decode_error(std::span(shifted).subspan(1)) == errc::misaligned);
}

// The tensor bytes of `bytes` through a tensor_stream, fed `chunk` bytes at a time from a buffer
// one byte off alignment: the error, and each tensor's bytes as the parts gave them.
struct streamed {
  error_code ec;
  bool done = false;
  std::vector<std::vector<std::uint8_t>> tensors;
};

streamed stream_tensors(std::span<const std::uint8_t> bytes, std::size_t chunk) {
  const auto h = decode_header(bytes, spec).value();
  tensor_stream ts(h, spec);
  streamed r;
  r.tensors.resize(spec.size());
  const auto keep = [&](std::size_t t, gpu::const_tensor_view v) {
    CHECK(reinterpret_cast<std::uintptr_t>(v.data) % gpu::dtype_size(v.type) == 0);
    CHECK(v.type == spec[t].type);
    const auto* p = static_cast<const std::uint8_t*>(v.data);
    r.tensors[t].insert(r.tensors[t].end(), p, p + v.bytes());
    return error_code{};
  };
  std::vector<std::uint8_t> shifted(chunk + 1);
  for (std::size_t at = 0; at < bytes.size() && !r.ec; at += chunk) {
    const auto piece = bytes.subspan(at, std::min(chunk, bytes.size() - at));
    std::memcpy(shifted.data() + 1, piece.data(), piece.size());
    r.ec = ts.feed(std::span(shifted).subspan(1, piece.size()), keep);
  }
  r.done = ts.done();
  return r;
}

TEST_CASE("codec: tensor bytes streamed in chunks of any size give the decoded tensors") {
  fixture f;
  const auto bytes = encode(f.data_message(), spec);
  const auto whole = decode(bytes, spec).value();
  for (std::size_t chunk = 1; chunk <= bytes.size(); ++chunk) {
    CAPTURE(chunk);
    const auto r = stream_tensors(bytes, chunk);
    REQUIRE(!r.ec);
    CHECK(r.done);
    for (std::size_t t = 0; t < spec.size(); ++t) {
      const auto v = (*whole.tensors)[t];
      const auto* p = static_cast<const std::uint8_t*>(v.data);
      CHECK(r.tensors[t] == std::vector<std::uint8_t>(p, p + v.bytes()));
    }
  }
}

TEST_CASE("codec: streamed tensor bytes are checked as decode checks them") {
  fixture f;
  const auto good = encode(f.data_message(), spec);
  const auto h = decode_header(good, spec).value();
  std::size_t refused = 0;
  // Every byte after the FlatBuffers header, set to values that break padding or finiteness.
  for (std::size_t at = h.layout.padding_from; at < good.size(); ++at) {
    for (std::uint8_t value : {std::uint8_t{0x01}, std::uint8_t{0x7f}, std::uint8_t{0xff}}) {
      CAPTURE(at);
      CAPTURE(int{value});
      auto bytes = good;
      bytes[at] = value;
      const auto want = decode_error(bytes);
      for (std::size_t chunk : {std::size_t{3}, std::size_t{8}, bytes.size()}) {
        const auto r = stream_tensors(bytes, chunk);
        CHECK(r.ec == want);
        CHECK(r.done == !want);
      }
      if (want) ++refused;
    }
  }
  CHECK(refused > 20);
  // One byte more than the message: trailing; after an error the stream takes nothing.
  auto longer = good;
  longer.push_back(0);
  tensor_stream ts(h, spec);
  const auto ignore = [](std::size_t, gpu::const_tensor_view) { return error_code{}; };
  CHECK(ts.feed(longer, ignore) == errc::trailing_bytes);
  CHECK(ts.feed(std::span(good).first(1), ignore) == errc::malformed);
  CHECK(!ts.done());
  // A part's own error stops the stream with it.
  tensor_stream failing(h, spec);
  CHECK(failing.feed(good, [](std::size_t, gpu::const_tensor_view) {
    return error_code(errc::backend_failed);
  }) == errc::backend_failed);
  CHECK(!failing.done());
}

TEST_CASE("codec: a decoded borrowed payload is copied by the node that keeps it") {
  fixture f;
  auto stream = f.backend->make_stream().value();
  config cfg;
  cfg.self = {1};
  cfg.peers = {{2}};
  auto zero = model::create(*f.backend, spec).value();  // contents start uninitialised
  for (std::size_t t = 0; t < spec.size(); ++t) {
    for (std::size_t k = 0; k < spec[t].numel; ++k)
      set_element(zero.x, t, k, 0.0f);
  }
  auto node = make_node(cfg, std::move(zero), *f.backend, *stream);
  auto bytes = encode(f.data_message(), spec);
  auto msg = decode(bytes, spec);  // no keep-alive: borrowed
  REQUIRE(msg.has_value());
  CHECK(msg->tensors->borrowed());
  recording_sink out;
  auto m = *msg;
  m.header.round = 0;  // frame 0 (the crafted one named frame 3, unknown to a fresh node)
  m.header.ack = 0;
  REQUIRE(!node->on_message({2}, m, 0, out));
  std::fill(bytes.begin(), bytes.end(), std::uint8_t{0xee});  // the node must not read these
  // A newer running sum: the node subtracts the one it kept, which must be intact.
  message next = f.data_message();
  next.header.seq = 43;
  next.header.round = 0;
  next.header.ack = 0;
  next.tensors = f.payload(2.0f);
  REQUIRE(!node->on_message({2}, next, 0, out));
  // x = 0 + payload(2) (the first sum, then the difference), weight 0.75.
  CHECK(element(node->state().x, 0, 0) == 2.0f);
  CHECK(element(node->state().x, 2, 1) == 2.0f + 21 * 0.25f);
}

TEST_CASE("errors of the gossip category have names and messages") {
  CHECK(std::string(gossip_category().name()) == "mws.gossip");
  for (int e = 0; e <= static_cast<int>(errc::backend_failed); ++e) {
    CHECK(!make_error_code(static_cast<errc>(e)).message().empty());
    CHECK(make_error_code(static_cast<errc>(e)).message() != "unknown gossip error");
  }
}

TEST_CASE("rng: same seed, same stream; below(n) stays below n and reaches every value") {
  rng a(5), b(5), c(6);
  bool differ = false;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next();
    CHECK(x == b.next());
    differ = differ || x != c.next();
  }
  CHECK(differ);
  std::vector<int> hits(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const auto v = a.below(7);
    REQUIRE(v < 7);
    ++hits[v];
  }
  for (int h : hits)
    CHECK(h > 800);
  for (int i = 0; i < 1000; ++i) {
    const double u = a.unit();
    CHECK(u >= 0.0);
    CHECK(u < 1.0);
  }
}

}  // namespace
}  // namespace mws::gossip::test
