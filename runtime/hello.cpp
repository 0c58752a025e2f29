#include "runtime/hello.hpp"

#include <flatbuffers/flatbuffers.h>

#include "runtime/hello_generated.h"

namespace mws::runtime {
namespace {

namespace fb = hello_wire;

// numel x dtype size without overflow, or nothing.
std::optional<std::uint64_t> checked_bytes(const tensor_spec& t) {
  std::uint64_t n = 1;
  for (const auto d : t.shape) {
    if (d != 0 && n > UINT64_MAX / d) return std::nullopt;
    n *= d;
  }
  if (n > UINT64_MAX / gpu::dtype_size(t.type)) return std::nullopt;
  return n * gpu::dtype_size(t.type);
}

std::optional<tensor_spec> decode_tensor(const fb::Tensor* w, std::string& why) {
  if (w == nullptr || w->name() == nullptr || w->name()->size() == 0) {
    why = "a tensor without a name";
    return std::nullopt;
  }
  tensor_spec t;
  t.name.assign(w->name()->c_str(), w->name()->size());
  if (t.name.size() > hello_name_bytes_max) {
    why = "a tensor name longer than " + std::to_string(hello_name_bytes_max) + " bytes";
    return std::nullopt;
  }
  if (w->dtype() > static_cast<std::uint8_t>(gpu::dtype::bf16)) {
    why = "tensor '" + t.name + "' has an unknown dtype " + std::to_string(w->dtype());
    return std::nullopt;
  }
  t.type = static_cast<gpu::dtype>(w->dtype());
  if (w->shape() != nullptr) {
    if (w->shape()->size() > hello_rank_max) {
      why = "tensor '" + t.name + "' has more than " + std::to_string(hello_rank_max) + " dims";
      return std::nullopt;
    }
    t.shape.assign(w->shape()->begin(), w->shape()->end());
  }
  if (!checked_bytes(t)) {
    why = "tensor '" + t.name + "' has a size that overflows 64 bits";
    return std::nullopt;
  }
  return t;
}

}  // namespace

std::vector<std::uint8_t> encode_hello(const hello& h) {
  flatbuffers::FlatBufferBuilder b(256);
  std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
  tensors.reserve(h.tensors.tensors.size());
  for (const auto& t : h.tensors.tensors) {
    tensors.push_back(fb::CreateTensor(b, b.CreateString(t.name), static_cast<std::uint8_t>(t.type),
                                       b.CreateVector(t.shape)));
  }
  const auto root = fb::CreateHello(b, hello_version, b.CreateString(h.address), h.boot,
                                    b.CreateVector(tensors), b.CreateString(h.algorithm));
  fb::FinishHelloBuffer(b, root);
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

std::optional<hello> decode_hello(std::span<const std::uint8_t> bytes, std::string& why) {
  if (bytes.size() < 8 || bytes.size() > hello_bytes_max) {
    why = "hello shorter than 8 bytes or larger than " + std::to_string(hello_bytes_max);
    return std::nullopt;
  }
  // Depth 4 (root, vector, tensor, shape); tables: the root plus one per tensor.
  flatbuffers::Verifier::Options limits;
  limits.max_depth = 8;
  limits.max_tables = hello_tensors_max + 8;
  flatbuffers::Verifier v(bytes.data(), bytes.size(), limits);
  if (!fb::HelloBufferHasIdentifier(bytes.data()) || !fb::VerifyHelloBuffer(v)) {
    why = "hello is not a valid FlatBuffers message";
    return std::nullopt;
  }
  const auto* w = fb::GetHello(bytes.data());
  if (w->version() != hello_version) {
    why = "hello of protocol version " + std::to_string(w->version()) + ", this node speaks " +
          std::to_string(hello_version);
    return std::nullopt;
  }
  hello h;
  h.boot = w->boot();
  if (w->address() == nullptr || w->address()->size() == 0 ||
      w->address()->size() > hello_address_bytes_max) {
    why = "hello without a valid address";
    return std::nullopt;
  }
  h.address.assign(w->address()->c_str(), w->address()->size());
  if (w->algorithm() != nullptr) {  // absent: a node from before exact mode, push-sum
    if (w->algorithm()->size() == 0 || w->algorithm()->size() > hello_algorithm_bytes_max) {
      why = "hello with an empty or overlong algorithm name";
      return std::nullopt;
    }
    h.algorithm.assign(w->algorithm()->c_str(), w->algorithm()->size());
  }
  const auto* tensors = w->tensors();
  if (tensors == nullptr || tensors->size() == 0 || tensors->size() > hello_tensors_max) {
    why = "hello with no tensors or more than " + std::to_string(hello_tensors_max);
    return std::nullopt;
  }
  for (const auto* t : *tensors) {
    auto spec = decode_tensor(t, why);
    if (!spec) return std::nullopt;
    h.tensors.tensors.push_back(std::move(*spec));
  }
  return h;
}

}  // namespace mws::runtime
