// Model files: strict reading and atomic writing of safetensors.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the
// tensor bytes. Files are untrusted input: the reader caps the header (100 MB), requires every
// tensor's offsets to be contiguous, in order, inside the file and equal to numel x dtype size
// (all arithmetic checked), accepts the dtypes F32, F16 and BF16, and names the offending tensor
// in every error. Nothing it is given can make it crash or allocate more than the file's size.
//
// In memory each tensor starts on a 64-byte boundary of one host allocation, whatever its offset
// in the file, so that vector loads and device copies see aligned data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include "gpu/dtype.hpp"

namespace mws::runtime {

enum class model_errc {
  ok = 0,
  unreadable = 1,     // cannot open or read the file
  too_short,          // shorter than its 8-byte header length
  header_too_large,   // header length over the cap or past the end of the file
  bad_header_json,    // header is not a JSON object of the expected shape
  bad_tensor_entry,   // a tensor entry lacks or mistypes dtype, shape or data_offsets
  unsupported_dtype,  // a dtype other than F32, F16, BF16
  size_overflow,      // shape product or byte size overflows 64 bits
  bad_offsets,        // offsets out of order, overlapping, with gaps, or past the end
  size_mismatch,      // end - begin differs from numel x dtype size
  trailing_bytes,     // bytes after the last tensor
  unwritable,         // cannot write, sync or rename the output
  manifest_mismatch,  // tensors differ from the expected manifest
};

const boost::system::error_category& model_category() noexcept;
inline boost::system::error_code make_error_code(model_errc e) noexcept {
  return {static_cast<int>(e), model_category()};
}

// An error with the sentence an operator needs ("tensor 'w1': shape [3, 4] holds 12 elements
// of F32 = 48 bytes, but data_offsets span 40").
struct model_error {
  boost::system::error_code code;
  std::string message;
};

template <class T>
using model_result = boost::system::result<T, model_error>;

// [[noreturn]] hook that boost::system::result::value() uses for model_error.
[[noreturn]] void throw_exception_from_error(const model_error& e, const boost::source_location&);

struct tensor_spec {
  std::string name;
  gpu::dtype type = gpu::dtype::f32;
  std::vector<std::uint64_t> shape;

  std::uint64_t numel() const noexcept;  // product of shape (1 for a scalar); checked on load
  std::uint64_t bytes() const noexcept { return numel() * gpu::dtype_size(type); }
  friend bool operator==(const tensor_spec&, const tensor_spec&) = default;
};

// The tensors of a model, sorted by name: what every node of one mesh must share.
struct manifest {
  std::vector<tensor_spec> tensors;

  std::uint64_t total_bytes() const noexcept;
  // "3 tensors, 1234 parameters, 4.8 KiB" for logs.
  std::string summary() const;
  friend bool operator==(const manifest&, const manifest&) = default;
};

// Tells how two manifests differ, or returns an empty string when they are equal.
std::string describe_difference(const manifest& ours, const manifest& theirs);

// A model's tensors in host memory.
class model_file {
 public:
  explicit model_file(manifest m);  // zero-filled storage for `m`

  const manifest& spec() const noexcept { return manifest_; }
  std::span<std::byte> tensor_bytes(std::size_t i) noexcept;
  std::span<const std::byte> tensor_bytes(std::size_t i) const noexcept;
  std::map<std::string, std::string>& metadata() noexcept { return metadata_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

 private:
  struct aligned_free {
    void operator()(std::byte* p) const noexcept;
  };
  manifest manifest_;
  std::vector<std::size_t> offsets_;  // of each tensor in storage_, 64-byte aligned
  std::unique_ptr<std::byte[], aligned_free> storage_;
  std::map<std::string, std::string> metadata_;
};

// A model's tensors and metadata wherever they lie (a model_file, a node's memory), for the
// writers and the checksum: a node checkpoints its state through a view, without a copy. The
// viewed memory must outlive the view and stay unchanged while it is read.
class model_view {
 public:
  model_view(const model_file& m);  // NOLINT(google-explicit-constructor): every file is a view
  model_view(const manifest& spec, std::vector<std::span<const std::byte>> tensors,
             const std::map<std::string, std::string>& metadata);

  const manifest& spec() const noexcept { return *spec_; }
  std::span<const std::byte> tensor_bytes(std::size_t i) const noexcept { return tensors_[i]; }
  std::span<const std::span<const std::byte>> tensors() const noexcept { return tensors_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return *metadata_; }
  // Why the tensors do not fit the manifest (a count or a size), or "" when they do.
  std::string misfit() const;
  // The same tensors with other metadata.
  model_view with(const std::map<std::string, std::string>& metadata) const {
    model_view v = *this;
    v.metadata_ = &metadata;
    return v;
  }

 private:
  const manifest* spec_;
  std::vector<std::span<const std::byte>> tensors_;  // in spec order, each spec.bytes() long
  const std::map<std::string, std::string>* metadata_;
};

inline constexpr std::uint64_t safetensors_header_bytes_max = 100'000'000;

model_result<model_file> load_safetensors(const std::filesystem::path& path);

// Parses a whole file already in memory (the loader and the fuzz target share this).
model_result<model_file> parse_safetensors(std::span<const std::byte> file);

// Writes atomically: a temporary file beside `path`, fsync, rename over `path`, fsync of the
// directory. A crash at any moment leaves either the old file or the new one. A view whose
// tensors do not fit its manifest is an error (manifest_mismatch), and nothing is written.
model_result<void> save_safetensors(const std::filesystem::path& path, const model_view& model);

// The bytes save_safetensors writes, in memory.
std::string encode_safetensors(const model_file& model);

// The 8-byte length and the JSON header (padded so data starts 8-byte aligned) of a file whose
// tensors follow it back to back in manifest order: for writers that produce the data
// themselves (the node's /export).
std::string safetensors_prefix(const manifest& spec,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace mws::runtime

template <>
struct boost::system::is_error_code_enum<mws::runtime::model_errc> : std::true_type {};
