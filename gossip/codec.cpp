#include "gossip/codec.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <flatbuffers/flatbuffers.h>

#include "gossip/detail/assert.hpp"
#include "gossip/wire_generated.h"

namespace mws::gossip {
namespace {

constexpr std::size_t align8(std::size_t n) noexcept {
  return (n + 7) / 8 * 8;
}

void put_u32(std::uint8_t* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
std::uint32_t get_u32(const std::uint8_t* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
std::uint16_t get_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}

// Builds the FlatBuffers header of `msg` into `fbb` (finished).
void build_header(flatbuffers::FlatBufferBuilder& fbb, const message& msg, const manifest& spec) {
  std::vector<flatbuffers::Offset<wire::Tensor>> tensors;
  if (msg.tensors) {
    MWS_ASSERT(msg.tensors->size() == spec.size());
    tensors.reserve(spec.size());
    for (std::size_t i = 0; i < spec.size(); ++i) {
      const auto v = (*msg.tensors)[i];
      tensors.push_back(wire::CreateTensor(fbb, fbb.CreateString(spec[i].name),
                                           static_cast<wire::DType>(v.type), v.numel, v.bytes()));
    }
  }
  const auto list = msg.tensors ? fbb.CreateVector(tensors) : 0;
  wire::HeaderBuilder h(fbb);
  h.add_kind(static_cast<wire::Kind>(msg.header.kind));
  h.add_seq(msg.header.seq);
  h.add_round(msg.header.round);
  h.add_step(msg.header.step);
  h.add_degree(msg.header.degree);
  h.add_weight(msg.header.weight);
  h.add_ack(msg.header.ack);
  h.add_view(msg.header.view);
  if (msg.tensors) h.add_tensors(list);
  fbb.Finish(h.Finish());
}

wire_layout layout_for(std::size_t fb_bytes, const message& msg) {
  wire_layout l;
  l.header_bytes = align8(wire_prefix_bytes + fb_bytes);
  l.padding_from = wire_prefix_bytes + fb_bytes;
  std::size_t at = l.header_bytes;
  if (msg.tensors) {
    l.tensor_offsets.reserve(msg.tensors->size());
    for (std::size_t i = 0; i < msg.tensors->size(); ++i) {
      l.tensor_offsets.push_back(at);
      at = align8(at + (*msg.tensors)[i].bytes());
    }
  }
  l.total_bytes = at;
  return l;
}

// An extra member of exact mode holds w = 0 after handing its mass over.
bool weight_must_be_positive(message_kind k) noexcept {
  return carries_tensors(k) && k != message_kind::exact_value;
}

bool all_zero(const std::uint8_t* p, std::size_t n) noexcept {
  return std::all_of(p, p + n, [](std::uint8_t b) { return b == 0; });
}

bool all_finite(const std::uint8_t* p, gpu::dtype type, std::size_t numel) noexcept {
  switch (type) {
    case gpu::dtype::f32:
      for (std::size_t i = 0; i < numel; ++i) {
        std::uint32_t u;
        std::memcpy(&u, p + 4 * i, 4);
        if ((u & 0x7f800000u) == 0x7f800000u) return false;
      }
      return true;
    case gpu::dtype::f16:
    case gpu::dtype::bf16: {
      const std::uint16_t exp_mask = type == gpu::dtype::f16 ? 0x7c00u : 0x7f80u;
      for (std::size_t i = 0; i < numel; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        if ((h & exp_mask) == exp_mask) return false;
      }
      return true;
    }
  }
  return false;
}

}  // namespace

std::size_t wire_size(const message& msg, const manifest& spec) {
  flatbuffers::FlatBufferBuilder fbb(256);
  build_header(fbb, msg, spec);
  return layout_for(fbb.GetSize(), msg).total_bytes;
}

std::vector<std::uint8_t> encode_header(const message& msg, const manifest& spec,
                                        wire_layout* layout) {
  flatbuffers::FlatBufferBuilder fbb(256);
  build_header(fbb, msg, spec);
  auto l = layout_for(fbb.GetSize(), msg);
  std::vector<std::uint8_t> out(l.header_bytes, 0);
  put_u32(out.data(), static_cast<std::uint32_t>(fbb.GetSize()));
  put_u16(out.data() + 4, wire_version);
  std::memcpy(out.data() + wire_prefix_bytes, fbb.GetBufferPointer(), fbb.GetSize());
  if (layout) *layout = std::move(l);
  return out;
}

std::vector<std::uint8_t> encode(const message& msg, const manifest& spec) {
  wire_layout l;
  auto out = encode_header(msg, spec, &l);
  out.resize(l.total_bytes, 0);
  for (std::size_t i = 0; i < l.tensor_offsets.size(); ++i) {
    const auto v = (*msg.tensors)[i];
    if (v.bytes() > 0) std::memcpy(out.data() + l.tensor_offsets[i], v.data, v.bytes());
  }
  return out;
}

result<decoded_header> decode_header(std::span<const std::uint8_t> bytes, const manifest& spec,
                                     const decode_limits& limits) {
  if (bytes.size() < wire_prefix_bytes) return errc::truncated;
  const std::size_t fb_bytes = get_u32(bytes.data());
  if (get_u16(bytes.data() + 4) != wire_version || get_u16(bytes.data() + 6) != 0) {
    return errc::malformed;
  }
  if (fb_bytes > limits.header_bytes_max) return errc::too_large;
  if (fb_bytes < 8) return errc::malformed;
  if (bytes.size() - wire_prefix_bytes < fb_bytes) return errc::truncated;

  // FlatBuffers reads scalars in place, so it gets an 8-byte aligned copy of the header
  // whatever the alignment of the caller's bytes.
  std::vector<std::uint64_t> aligned((fb_bytes + 7) / 8);
  std::memcpy(aligned.data(), bytes.data() + wire_prefix_bytes, fb_bytes);
  const auto* fb = reinterpret_cast<const std::uint8_t*>(aligned.data());
  flatbuffers::Verifier verifier(fb, fb_bytes, limits.verifier_depth_max,
                                 limits.verifier_tables_max);
  if (!wire::VerifyHeaderBuffer(verifier)) return errc::malformed;
  const auto* h = wire::GetHeader(fb);

  const auto kind_raw = static_cast<std::uint8_t>(h->kind());
  if (kind_raw >= message_kind_count) return errc::bad_kind;
  decoded_header out;
  out.header.kind = static_cast<message_kind>(kind_raw);
  out.header.seq = h->seq();
  out.header.round = h->round();
  out.header.step = h->step();
  out.header.degree = h->degree();
  out.header.weight = h->weight();
  out.header.ack = h->ack();
  out.header.view = h->view();

  const auto kind = out.header.kind;
  if (!std::isfinite(out.header.weight)) return errc::bad_weight;
  if (weight_must_be_positive(kind) && !(out.header.weight > 0.0)) return errc::bad_weight;
  if (out.header.weight < 0.0) return errc::bad_weight;
  if (out.header.round > limits.round_max || out.header.degree > limits.degree_max ||
      out.header.step > max_exact_step + 1) {
    return errc::out_of_range;
  }
  if (kind == message_kind::sync_value && out.header.degree == 0) return errc::out_of_range;

  const auto* list = h->tensors();
  const std::size_t count = list ? list->size() : 0;
  if (carries_tensors(kind) ? count != spec.size() : count != 0) return errc::wrong_tensor_count;
  out.layout.header_bytes = align8(wire_prefix_bytes + fb_bytes);
  out.layout.padding_from = wire_prefix_bytes + fb_bytes;
  std::size_t at = out.layout.header_bytes;
  out.layout.tensor_offsets.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto* t = list->Get(static_cast<flatbuffers::uoffset_t>(i));
    const auto& want = spec[i];
    if (!t->name() || t->name()->string_view() != want.name) return errc::wrong_tensor_name;
    const auto dtype_raw = static_cast<std::uint8_t>(t->dtype());
    if (dtype_raw > 2 || static_cast<gpu::dtype>(dtype_raw) != want.type) return errc::wrong_dtype;
    if (t->numel() != want.numel) return errc::wrong_numel;
    const std::size_t size = want.numel * gpu::dtype_size(want.type);
    if (t->bytes() != size) return errc::wrong_byte_size;
    out.layout.tensor_offsets.push_back(at);
    at = align8(at + size);
    if (at > limits.message_bytes_max) return errc::too_large;
  }
  out.layout.total_bytes = at;
  if (at > limits.message_bytes_max) return errc::too_large;
  return out;
}

boost::system::error_code check_tensor_bytes(std::span<const std::uint8_t> bytes,
                                             const decoded_header& h, const manifest& spec,
                                             const decode_limits& limits) {
  const auto& l = h.layout;
  if (bytes.size() < l.total_bytes) return errc::truncated;
  if (bytes.size() > l.total_bytes) return errc::trailing_bytes;
  if (!all_zero(bytes.data() + l.padding_from, l.header_bytes - l.padding_from)) {
    return errc::malformed;
  }
  for (std::size_t i = 0; i < l.tensor_offsets.size(); ++i) {
    const auto* p = bytes.data() + l.tensor_offsets[i];
    const std::size_t size = spec[i].numel * gpu::dtype_size(spec[i].type);
    const std::size_t end =
        i + 1 < l.tensor_offsets.size() ? l.tensor_offsets[i + 1] : l.total_bytes;
    if (!all_zero(p + size, end - (l.tensor_offsets[i] + size))) return errc::malformed;
    if (reinterpret_cast<std::uintptr_t>(p) % gpu::dtype_size(spec[i].type) != 0) {
      return errc::misaligned;
    }
    if (limits.check_finite && !all_finite(p, spec[i].type, spec[i].numel)) {
      return errc::non_finite_tensor;
    }
  }
  return {};
}

tensor_stream::tensor_stream(decoded_header h, const manifest& spec, const decode_limits& limits)
    : h_(std::move(h)), spec_(spec), check_finite_(limits.check_finite) {
  MWS_ASSERT(h_.layout.tensor_offsets.size() == spec.size());
}

boost::system::error_code tensor_stream::feed(std::span<const std::uint8_t> bytes,
                                              const part_fn& part) {
  if (failed_) return errc::malformed;
  const auto& l = h_.layout;
  auto ec = [&]() -> boost::system::error_code {
    if (bytes.size() > l.total_bytes - at_) return errc::trailing_bytes;
    while (!bytes.empty()) {
      if (at_ < l.header_bytes) {  // decoded already; its padding is checked here
        const auto n = std::min(bytes.size(), l.header_bytes - at_);
        const auto pad = l.padding_from > at_ ? std::min(n, l.padding_from - at_) : 0;
        if (!all_zero(bytes.data() + pad, n - pad)) return errc::malformed;
        at_ += n;
        bytes = bytes.subspan(n);
        continue;
      }
      // The tensor whose bytes or padding come next.
      const auto next = std::upper_bound(l.tensor_offsets.begin(), l.tensor_offsets.end(), at_);
      const auto t = static_cast<std::size_t>(next - l.tensor_offsets.begin()) - 1;
      const auto end = next == l.tensor_offsets.end() ? l.total_bytes : *next;
      const auto n = std::min(bytes.size(), end - at_);
      if (auto e = feed_tensor(t, bytes.first(n), part)) return e;
      bytes = bytes.subspan(n);
    }
    return {};
  }();
  failed_ = static_cast<bool>(ec);
  return ec;
}

// `bytes` lie within tensor t's bytes and padding, starting at at_.
boost::system::error_code tensor_stream::feed_tensor(std::size_t t,
                                                     std::span<const std::uint8_t> bytes,
                                                     const part_fn& part) {
  const auto width = gpu::dtype_size(spec_[t].type);
  const auto data_end = h_.layout.tensor_offsets[t] + spec_[t].numel * width;
  const auto in_data = at_ < data_end ? std::min(bytes.size(), data_end - at_) : 0;
  if (!all_zero(bytes.data() + in_data, bytes.size() - in_data)) return errc::malformed;
  auto data = bytes.first(in_data);
  at_ += bytes.size();
  if (carried_ != 0) {  // complete the element the last feed began
    const auto k = std::min(width - carried_, data.size());
    std::memcpy(carry_.data() + carried_, data.data(), k);
    carried_ += k;
    data = data.subspan(k);
    if (carried_ < width) return {};
    carried_ = 0;
    if (auto ec = give(t, carry_.data(), 1, part)) return ec;
  }
  const auto whole = data.size() / width;
  if (whole != 0) {
    if (auto ec = give(t, data.data(), whole, part)) return ec;
  }
  carried_ = data.size() - whole * width;
  std::memcpy(carry_.data(), data.data() + whole * width, carried_);
  return {};
}

boost::system::error_code tensor_stream::give(std::size_t t, const std::uint8_t* p,
                                              std::size_t numel, const part_fn& part) {
  const auto type = spec_[t].type;
  if (check_finite_ && !all_finite(p, type, numel)) return errc::non_finite_tensor;
  if (reinterpret_cast<std::uintptr_t>(p) % gpu::dtype_size(type) != 0) {
    const auto bytes = numel * gpu::dtype_size(type);
    aligned_.resize((bytes + 7) / 8);
    std::memcpy(aligned_.data(), p, bytes);
    p = reinterpret_cast<const std::uint8_t*>(aligned_.data());
  }
  return part(t, {p, numel, type, gpu::memory_space::host});
}

result<message> decode(std::span<const std::uint8_t> bytes, const manifest& spec,
                       std::shared_ptr<const void> keep_alive, const decode_limits& limits) {
  auto h = decode_header(bytes, spec, limits);
  if (!h) return h.error();
  if (auto ec = check_tensor_bytes(bytes, *h, spec, limits)) return ec;
  message msg;
  msg.header = h->header;
  if (carries_tensors(msg.header.kind)) {
    std::vector<gpu::const_tensor_view> views;
    views.reserve(spec.size());
    for (std::size_t i = 0; i < spec.size(); ++i) {
      views.emplace_back(bytes.data() + h->layout.tensor_offsets[i], spec[i].numel, spec[i].type,
                         gpu::memory_space::host);
    }
    msg.tensors = std::make_shared<const tensor_set>(
        tensor_set::borrow(std::move(views), std::move(keep_alive)));
  }
  return msg;
}

}  // namespace mws::gossip
