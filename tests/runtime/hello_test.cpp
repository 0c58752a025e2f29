#include "runtime/hello.hpp"

#include <doctest/doctest.h>

namespace mws::runtime {
namespace {

hello sample() {
  hello h;
  h.address = "127.0.0.1:7400";
  h.boot = 0x1234567890abcdefull;
  h.tensors.tensors = {{"a.bias", gpu::dtype::bf16, {16}}, {"a.weight", gpu::dtype::f32, {16, 8}}};
  return h;
}

std::optional<hello> decode(const std::vector<std::uint8_t>& bytes, std::string& why) {
  return decode_hello(bytes, why);
}

TEST_CASE("a hello survives encoding and decoding") {
  std::string why;
  const auto h = decode(encode_hello(sample()), why);
  REQUIRE_MESSAGE(h, why);
  CHECK(h->address == "127.0.0.1:7400");
  CHECK(h->boot == 0x1234567890abcdefull);
  CHECK(h->tensors == sample().tensors);
}

TEST_CASE("hellos that are malformed or out of bounds are refused with a reason") {
  std::string why;
  SUBCASE("empty and short buffers") {
    CHECK_FALSE(decode({}, why));
    CHECK_FALSE(decode({1, 2, 3}, why));
  }
  SUBCASE("every truncation of a valid hello") {
    const auto bytes = encode_hello(sample());
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CHECK_FALSE(decode({bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)}, why));
    }
  }
  SUBCASE("wrong file identifier") {
    auto bytes = encode_hello(sample());
    bytes[4] = 'X';
    CHECK_FALSE(decode(bytes, why));
    CHECK(why.find("FlatBuffers") != std::string::npos);
  }
  SUBCASE("no address") {
    auto h = sample();
    h.address.clear();
    CHECK_FALSE(decode(encode_hello(h), why));
    CHECK(why.find("address") != std::string::npos);
  }
  SUBCASE("address too long") {
    auto h = sample();
    h.address.assign(hello_address_bytes_max + 1, 'a');
    CHECK_FALSE(decode(encode_hello(h), why));
  }
  SUBCASE("no tensors") {
    auto h = sample();
    h.tensors.tensors.clear();
    CHECK_FALSE(decode(encode_hello(h), why));
  }
  SUBCASE("a rank over the bound") {
    auto h = sample();
    h.tensors.tensors[0].shape.assign(hello_rank_max + 1, 1);
    CHECK_FALSE(decode(encode_hello(h), why));
    CHECK(why.find("a.bias") != std::string::npos);
  }
  SUBCASE("a size that overflows 64 bits") {
    auto h = sample();
    h.tensors.tensors[0].shape = {1ull << 32, 1ull << 32};
    CHECK_FALSE(decode(encode_hello(h), why));
    CHECK(why.find("overflows") != std::string::npos);
  }
  SUBCASE("an unnamed tensor") {
    auto h = sample();
    h.tensors.tensors[0].name.clear();
    CHECK_FALSE(decode(encode_hello(h), why));
  }
  SUBCASE("a name over the bound") {
    auto h = sample();
    h.tensors.tensors[0].name.assign(hello_name_bytes_max + 1, 'n');
    CHECK_FALSE(decode(encode_hello(h), why));
  }
}

TEST_CASE("a hello with an unknown dtype is refused") {
  auto h = sample();
  auto bytes = encode_hello(h);
  // The bf16 dtype byte (2) of the first tensor, patched to 7: find it by re-encoding with f16
  // (1) and diffing, so the test does not depend on the builder's layout.
  h.tensors.tensors[0].type = gpu::dtype::f16;
  const auto other = encode_hello(h);
  REQUIRE(other.size() == bytes.size());
  std::size_t patched = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != other[i]) {
      bytes[i] = 7;
      ++patched;
    }
  }
  REQUIRE(patched == 1);
  std::string why;
  CHECK_FALSE(decode_hello(bytes, why));
  CHECK(why.find("dtype") != std::string::npos);
}

}  // namespace
}  // namespace mws::runtime
