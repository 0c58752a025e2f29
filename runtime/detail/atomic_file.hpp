// Crash-safe replacement of a file's contents.
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

}  // namespace mws::runtime::detail
