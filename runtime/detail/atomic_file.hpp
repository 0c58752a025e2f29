// Files written whole: crash-safe replacement, and unnamed scratch files.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>

namespace mws::runtime::detail {

// Writes the concatenation of `parts` to a temporary file beside `path` (created with `mode`),
// fsyncs it, renames it over `path` and fsyncs the directory: after a crash at any moment the
// file holds either its old contents or the new ones. Returns an empty string, or what failed.
std::string write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::span<const std::byte>> parts,
                                  unsigned mode = 0644);

// Writes all of `bytes` to `fd`; false, with errno set, when a write fails.
bool write_all(int fd, std::span<const std::byte> bytes);

// A new file in `dir` with no name (O_TMPFILE; where the file system lacks it, a file created
// and unlinked at once), open for reading and writing, mode 0600: gone when closed, even after
// a crash. Returns the descriptor, or -1 with errno set.
int open_unnamed_file(const std::filesystem::path& dir);

}  // namespace mws::runtime::detail
