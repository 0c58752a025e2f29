// A node's long-term identity: a static X25519 key pair, kept in a key file, and the peer id
// derived from its public key.
//
// Why X25519 and not Ed25519: the handshake (handshake.hpp) proves a static key by a
// Diffie-Hellman inside the handshake, as Noise XX does, so a DH key is all a node needs. An
// Ed25519 key would be converted to X25519 for every handshake and would add a second key form
// to check, for no gain: nothing in mws signs data outside a session.
//
// Key file: exactly key_file_bytes bytes, "MWSKEY" 0x00 0x01 (magic and version 1), the 32-byte
// secret key, then the 32-byte public key (a check that the file is not damaged). It is created
// with mode 0600 under a temporary name, synced, and linked into place, so a reader never sees a
// partial file and an existing identity is never replaced. Loading refuses files that group or
// others may read or write. Functions here are synchronous and thread-safe (no shared state).
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include <boost/system/result.hpp>

namespace mws::transport {

inline constexpr std::size_t key_bytes = 32;
inline constexpr std::size_t key_file_bytes = 8 + 2 * key_bytes;

using public_key = std::array<std::uint8_t, key_bytes>;

// A peer's id: the first 16 bytes of BLAKE2b(public key). Names a peer in logs and maps; the
// authenticated public key itself stays the thing that is trusted.
struct peer_id {
  std::array<std::uint8_t, 16> bytes{};
  static peer_id of(const public_key& key) noexcept;
  std::string to_string() const;  // 32 lowercase hex digits
  friend auto operator<=>(const peer_id&, const peer_id&) = default;
};

// A static key pair. The secret is wiped when the object dies. Copyable on purpose (a listener
// and a dialler may each hold one); keep copies few.
class identity {
 public:
  static identity generate();
  // Rebuilds the pair from a secret key (for tests and for loading).
  static identity from_secret(const std::array<std::uint8_t, key_bytes>& secret) noexcept;

  identity(const identity&) = default;
  identity& operator=(const identity&) = default;
  ~identity();

  const public_key& public_key_bytes() const noexcept { return public_; }
  const std::array<std::uint8_t, key_bytes>& secret_key_bytes() const noexcept { return secret_; }
  peer_id id() const noexcept { return peer_id::of(public_); }

 private:
  identity() = default;
  std::array<std::uint8_t, key_bytes> secret_{};
  public_key public_{};
};

// Writes `id` to a new key file at `path` (mode 0600, atomic, never replacing a file).
boost::system::result<void> save_identity(const std::filesystem::path& path, const identity& id);

// Reads a key file. Errors: key_file_unreadable, key_file_permissions, key_file_size,
// key_file_format, key_file_corrupt.
boost::system::result<identity> load_identity(const std::filesystem::path& path);

// Loads the key file, or creates it with a fresh identity when it does not exist.
boost::system::result<identity> load_or_create_identity(const std::filesystem::path& path);

}  // namespace mws::transport
