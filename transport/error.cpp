#include "transport/error.hpp"

#include <string>

namespace mws::transport {
namespace {

class transport_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mws.transport"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok:
        return "success";
      case errc::key_file_unreadable:
        return "key file cannot be read";
      case errc::key_file_size:
        return "key file has the wrong size";
      case errc::key_file_format:
        return "key file has a wrong magic or version";
      case errc::key_file_corrupt:
        return "key file is damaged (public key does not match)";
      case errc::key_file_permissions:
        return "key file is accessible to group or others (chmod 600)";
      case errc::key_file_write_failed:
        return "key file could not be written";
      case errc::key_file_exists:
        return "key file exists already; not replacing it";
      case errc::handshake_timeout:
        return "handshake deadline passed";
      case errc::handshake_truncated:
        return "peer closed during the handshake";
      case errc::handshake_bad_message:
        return "malformed handshake message";
      case errc::psk_mismatch:
        return "peer does not hold the mesh pre-shared key";
      case errc::handshake_auth_failed:
        return "handshake authentication failed";
      case errc::weak_public_key:
        return "peer sent a low-order public key";
      case errc::peer_not_allowed:
        return "peer key is not on the allowlist";
      case errc::unexpected_peer:
        return "peer key differs from the expected one";
      case errc::bad_parameters:
        return "peer announced parameters outside our limits";
      case errc::rate_limited:
        return "too many handshakes from this address";
      case errc::too_many_connections:
        return "connection limit reached";
      case errc::frame_too_large:
        return "frame length beyond the cap";
      case errc::frame_malformed:
        return "malformed frame header";
      case errc::frame_auth_failed:
        return "frame failed authentication (tampered)";
      case errc::frame_replayed:
        return "frame counter replayed";
      case errc::frame_reordered:
        return "frame counter out of order";
      case errc::frame_truncated:
        return "stream ended inside a frame";
      case errc::window_violation:
        return "peer exceeded the flow-control window";
      case errc::idle_timeout:
        return "connection idle for too long";
      case errc::closed:
        return "connection closed";
      case errc::connection_lost:
        return "connection lost without a close frame";
      case errc::closed_by_peer:
        return "connection closed by the peer";
      case errc::injected_failure:
        return "injected failure (test link)";
    }
    return "unknown mws.transport error";
  }
};

}  // namespace

const boost::system::error_category& transport_category() noexcept {
  static const transport_error_category category;
  return category;
}

}  // namespace mws::transport
