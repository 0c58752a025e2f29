#include "transport/identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "transport/detail/sodium.hpp"
#include "transport/error.hpp"

namespace mws::transport {
namespace {

constexpr std::array<std::uint8_t, 8> magic{'M', 'W', 'S', 'K', 'E', 'Y', 0x00, 0x01};

// Closes a file descriptor on scope exit.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

bool write_all(int fd, const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

peer_id peer_id::of(const public_key& key) noexcept {
  detail::ensure_sodium();
  peer_id id;
  crypto_generichash(id.bytes.data(), id.bytes.size(), key.data(), key.size(), nullptr, 0);
  return id;
}

std::string peer_id::to_string() const {
  std::string hex(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes.data(), bytes.size());
  hex.pop_back();
  return hex;
}

identity identity::generate() {
  detail::ensure_sodium();
  identity id;
  randombytes_buf(id.secret_.data(), id.secret_.size());
  crypto_scalarmult_base(id.public_.data(), id.secret_.data());
  return id;
}

identity identity::from_secret(const std::array<std::uint8_t, key_bytes>& secret) noexcept {
  detail::ensure_sodium();
  identity id;
  id.secret_ = secret;
  crypto_scalarmult_base(id.public_.data(), id.secret_.data());
  return id;
}

identity::~identity() {
  sodium_memzero(secret_.data(), secret_.size());
}

boost::system::result<void> save_identity(const std::filesystem::path& path, const identity& id) {
  std::array<std::uint8_t, key_file_bytes> bytes{};
  std::memcpy(bytes.data(), magic.data(), magic.size());
  std::memcpy(bytes.data() + 8, id.secret_key_bytes().data(), key_bytes);
  std::memcpy(bytes.data() + 8 + key_bytes, id.public_key_bytes().data(), key_bytes);

  // A unique temporary name beside the target, created 0600 from the start (never chmod later:
  // that would leave a window in which the secret is readable).
  std::array<std::uint8_t, 8> nonce{};
  randombytes_buf(nonce.data(), nonce.size());
  std::string suffix(17, '\0');
  sodium_bin2hex(suffix.data(), suffix.size(), nonce.data(), nonce.size());
  suffix.pop_back();
  const std::filesystem::path temp = path.string() + ".tmp-" + suffix;

  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    sodium_memzero(bytes.data(), bytes.size());
    return make_error_code(errc::key_file_write_failed);
  }
  bool ok;
  {
    fd_guard guard{fd};
    ok = ::fchmod(fd, 0600) == 0 && write_all(fd, bytes.data(), bytes.size()) && ::fsync(fd) == 0;
  }
  sodium_memzero(bytes.data(), bytes.size());
  if (!ok) {
    ::unlink(temp.c_str());
    return make_error_code(errc::key_file_write_failed);
  }
  // link() fails when the target exists, so an existing identity is never replaced.
  const int linked = ::link(temp.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(temp.c_str());
  if (linked != 0) {
    return make_error_code(link_errno == EEXIST ? errc::key_file_exists
                                                : errc::key_file_write_failed);
  }
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fd_guard guard{dir_fd};
    ::fsync(dir_fd);
  }
  return {};
}

boost::system::result<identity> load_identity(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return make_error_code(errc::key_file_unreadable);
  fd_guard guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return make_error_code(errc::key_file_unreadable);
  if ((st.st_mode & 0077) != 0) return make_error_code(errc::key_file_permissions);
  if (st.st_size != static_cast<off_t>(key_file_bytes)) return make_error_code(errc::key_file_size);

  std::array<std::uint8_t, key_file_bytes + 1> bytes{};
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error_code(errc::key_file_unreadable);
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  // The size is checked again on the bytes read: the file may change after fstat.
  if (got != key_file_bytes) {
    sodium_memzero(bytes.data(), bytes.size());
    return make_error_code(errc::key_file_size);
  }
  if (std::memcmp(bytes.data(), magic.data(), magic.size()) != 0) {
    sodium_memzero(bytes.data(), bytes.size());
    return make_error_code(errc::key_file_format);
  }
  std::array<std::uint8_t, key_bytes> secret{};
  std::memcpy(secret.data(), bytes.data() + 8, key_bytes);
  identity id = identity::from_secret(secret);
  sodium_memzero(secret.data(), secret.size());
  const bool match =
      sodium_memcmp(id.public_key_bytes().data(), bytes.data() + 8 + key_bytes, key_bytes) == 0;
  sodium_memzero(bytes.data(), bytes.size());
  if (!match) return make_error_code(errc::key_file_corrupt);
  return id;
}

boost::system::result<identity> load_or_create_identity(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
    const identity fresh = identity::generate();
    auto saved = save_identity(path, fresh);
    // Another process may have created it first; then its identity wins and is loaded.
    if (!saved && saved.error() != make_error_code(errc::key_file_exists)) return saved.error();
  }
  return load_identity(path);
}

}  // namespace mws::transport
