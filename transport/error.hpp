// Errors of the transport, as boost::system::error_code values of one category ("mws.transport").
// Every refusal has its own code so logs, metrics and tests can tell them apart; all of them end
// the connection (or refuse the key file) before any application byte is delivered.
#pragma once

#include <boost/system/error_code.hpp>

namespace mws::transport {

enum class errc {
  ok = 0,
  // key files
  key_file_unreadable = 1,  // cannot open or read the key file
  key_file_size,            // the key file is not exactly key_file_bytes long
  key_file_format,          // wrong magic or version
  key_file_corrupt,         // the stored public key does not match the secret key
  key_file_permissions,     // group or others may access the key file (must be 0600 or stricter)
  key_file_write_failed,    // creating, writing, syncing or linking the key file failed
  key_file_exists,          // refusing to replace an existing key file
  // handshake
  handshake_timeout,      // the handshake did not finish before its deadline
  handshake_truncated,    // the peer closed before the handshake was complete
  handshake_bad_message,  // wrong length, magic or version in a handshake message
  psk_mismatch,           // the peer does not hold our mesh pre-shared key (or we lack its)
  handshake_auth_failed,  // a handshake AEAD tag failed: tampering or a wrong key
  weak_public_key,        // a peer key is a low-order point (the DH result would be zero)
  peer_not_allowed,       // the peer's static key is not on the allowlist
  unexpected_peer,        // the peer's static key differs from the one the dialler expected
  bad_parameters,         // the peer announced a frame size or window outside our limits
  rate_limited,           // too many handshakes from this source address
  too_many_connections,   // total or per-address connection cap reached
  // frames
  frame_too_large,    // a length prefix beyond the negotiated cap (no allocation made)
  frame_malformed,    // a length too small, an unknown type or non-zero reserved bits
  frame_auth_failed,  // an AEAD tag failed: the frame was tampered with
  frame_replayed,     // a frame counter at or below one already accepted
  frame_reordered,    // a frame counter beyond the next expected one
  frame_truncated,    // the stream ended inside a frame
  window_violation,   // the peer sent more data than the window we granted
  // connection
  idle_timeout,     // nothing received for the idle timeout
  closed,           // this side closed the connection
  closed_by_peer,   // the peer closed the connection gracefully
  connection_lost,  // the stream ended at a frame boundary without a close frame
  // tests
  injected_failure,  // the in-memory link failed an operation on purpose
};

const boost::system::error_category& transport_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), transport_category()};
}

}  // namespace mws::transport

template <>
struct boost::system::is_error_code_enum<mws::transport::errc> : std::true_type {};
