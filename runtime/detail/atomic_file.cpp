#include "runtime/detail/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mws::runtime::detail {
namespace {

std::string describe(const char* what, const std::filesystem::path& p) {
  return std::string(what) + " " + p.string() + ": " + std::strerror(errno);
}

}  // namespace

bool write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return true;
}

int open_unnamed_file(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR)) return fd;
  // A file system without O_TMPFILE: a named file, unlinked at once.
  std::string name = (dir / ".mws-tmp.XXXXXX").string();
  const int named = ::mkostemp(name.data(), O_CLOEXEC);
  if (named >= 0) ::unlink(name.c_str());
  return named;
}

std::string write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::span<const std::byte>> parts,
                                  unsigned mode) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  const std::filesystem::path tmp =
      dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return describe("cannot create", tmp);
  std::string error;
  for (auto part : parts) {
    if (!write_all(fd, part)) {
      error = describe("cannot write", tmp);
      break;
    }
  }
  if (error.empty() && ::fsync(fd) != 0) error = describe("cannot sync", tmp);
  if (::close(fd) != 0 && error.empty()) error = describe("cannot close", tmp);
  if (error.empty() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    error = describe("cannot rename onto", path);
  }
  if (!error.empty()) {
    ::unlink(tmp.c_str());
    return error;
  }
  // The rename is durable only once the directory entry is.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return describe("cannot open directory", dir);
  const bool synced = ::fsync(dfd) == 0;
  ::close(dfd);
  return synced ? std::string() : describe("cannot sync directory", dir);
}

}  // namespace mws::runtime::detail
