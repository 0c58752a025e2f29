// libFuzzer target: the hello decoder (runtime/hello.hpp) on arbitrary bytes. Whatever decodes
// must survive a re-encoding and decode to the same hello.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "runtime/hello.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string why;
  const auto h = mws::runtime::decode_hello(std::span(data, size), why);
  if (!h) {
    if (why.empty()) std::abort();  // every refusal says why
    return 0;
  }
  const auto again = mws::runtime::decode_hello(mws::runtime::encode_hello(*h), why);
  if (!again || again->address != h->address || again->boot != h->boot ||
      !(again->tensors == h->tensors)) {
    std::abort();
  }
  return 0;
}
