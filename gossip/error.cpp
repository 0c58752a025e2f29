#include "gossip/error.hpp"

#include <string>

namespace mws::gossip {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mws.gossip"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok:
        return "success";
      case errc::truncated:
        return "message truncated";
      case errc::too_large:
        return "message larger than the configured limit";
      case errc::malformed:
        return "message header failed FlatBuffers verification";
      case errc::bad_kind:
        return "unknown message kind";
      case errc::wrong_tensor_count:
        return "tensor count does not match the model manifest";
      case errc::wrong_tensor_name:
        return "tensor name does not match the model manifest";
      case errc::wrong_dtype:
        return "tensor dtype does not match the model manifest";
      case errc::wrong_numel:
        return "tensor element count does not match the model manifest";
      case errc::wrong_byte_size:
        return "tensor byte size is not numel times dtype size";
      case errc::trailing_bytes:
        return "bytes after the last tensor";
      case errc::bad_weight:
        return "weight not finite or not positive";
      case errc::non_finite_tensor:
        return "tensor data holds NaN or infinity";
      case errc::out_of_range:
        return "header counter out of range";
      case errc::misaligned:
        return "tensor data not aligned for its dtype";
      case errc::not_a_peer:
        return "message from a peer outside the configuration";
      case errc::wrong_algorithm:
        return "message kind not used by this node's algorithm";
      case errc::backend_failed:
        return "mixing operation failed in the compute backend";
      case errc::not_supported:
        return "operation not supported by this node's algorithm";
      case errc::out_of_turn:
        return "streamed share call out of order";
    }
    return "unknown gossip error";
  }
};

}  // namespace

const boost::system::error_category& gossip_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace mws::gossip
