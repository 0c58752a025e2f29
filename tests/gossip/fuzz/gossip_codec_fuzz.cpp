// libFuzzer target: the gossip codec's decoder on arbitrary bytes, against a fixed manifest of
// mixed dtypes. Whatever decodes must re-encode to the same bytes (the wire form is canonical).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gossip/codec.hpp"

namespace {

const mws::gossip::manifest& fuzz_manifest() {
  static const mws::gossip::manifest m = {{"w", mws::gpu::dtype::f32, 3},
                                          {"b", mws::gpu::dtype::f16, 2},
                                          {"e", mws::gpu::dtype::bf16, 1}};
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Tensor data must be aligned for its dtype; libFuzzer's buffer is not always, so decode an
  // aligned copy (misalignment itself is covered by the unit tests).
  std::vector<std::uint64_t> aligned((size + 7) / 8);
  if (size > 0) std::memcpy(aligned.data(), data, size);
  const std::span bytes(reinterpret_cast<const std::uint8_t*>(aligned.data()), size);
  mws::gossip::decode_limits limits;
  limits.message_bytes_max = 1 << 20;
  limits.header_bytes_max = 1 << 16;
  auto msg = mws::gossip::decode(bytes, fuzz_manifest(), nullptr, limits);
  if (!msg) return 0;
  const auto again = mws::gossip::encode(*msg, fuzz_manifest());
  if (again.size() != size || std::memcmp(again.data(), bytes.data(), size) != 0) {
    // A FlatBuffer may be laid out differently by another writer and still decode: only the
    // decoded meaning has to agree.
    auto twice = mws::gossip::decode(again, fuzz_manifest(), nullptr, limits);
    if (!twice || twice->header.kind != msg->header.kind || twice->header.seq != msg->header.seq) {
      __builtin_trap();
    }
  }
  return 0;
}
