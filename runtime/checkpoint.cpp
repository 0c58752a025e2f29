#include "runtime/checkpoint.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "transport/detail/sodium.hpp"

namespace mws::runtime {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view name_prefix = "checkpoint-";
constexpr std::string_view name_suffix = ".safetensors";
constexpr std::size_t sequence_digits = 20;  // enough for 2^64 - 1
constexpr std::string_view encoding_tag = "mws.checkpoint/1";

class checkpoint_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mws.checkpoint"; }
  std::string message(int ev) const override {
    switch (static_cast<checkpoint_errc>(ev)) {
      case checkpoint_errc::ok:
        return "success";
      case checkpoint_errc::not_a_directory:
        return "the checkpoint path is not a directory";
      case checkpoint_errc::checksum_missing:
        return "checkpoint has no checksum or sequence number";
      case checkpoint_errc::checksum_mismatch:
        return "checkpoint checksum mismatch";
      case checkpoint_errc::sequence_mismatch:
        return "checkpoint sequence number differs from its file name";
      case checkpoint_errc::sequence_exhausted:
        return "no checkpoint sequence number is left";
    }
    return "unknown mws.checkpoint error";
  }
};

model_error fail(boost::system::error_code code, std::string message) {
  return {code, std::move(message)};
}

// BLAKE2b-256 fed piece by piece, so that the tensors are hashed where they lie.
class hasher {
 public:
  hasher() { crypto_generichash_init(&state_, nullptr, 0, crypto_generichash_BYTES); }
  void bytes(std::span<const std::byte> b) {
    crypto_generichash_update(&state_, reinterpret_cast<const unsigned char*>(b.data()), b.size());
  }
  void u64(std::uint64_t v) {
    std::byte le[8];
    for (std::size_t i = 0; i < 8; ++i)
      le[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
    bytes(le);
  }
  void str(std::string_view s) {
    u64(s.size());
    bytes(std::as_bytes(std::span<const char>(s)));
  }
  std::string hex() {
    unsigned char digest[crypto_generichash_BYTES];
    crypto_generichash_final(&state_, digest, sizeof digest);
    char text[2 * sizeof digest + 1];
    sodium_bin2hex(text, sizeof text, digest, sizeof digest);
    return text;
  }

 private:
  crypto_generichash_state state_;
};

std::string safetensors_dtype(gpu::dtype t) {
  std::string s(gpu::to_string(t));
  std::transform(s.begin(), s.end(), s.begin(), [](char c) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  });
  return s;
}

// The sequence number in a checkpoint file's name, or nothing for any other name.
std::optional<std::uint64_t> sequence_of(std::string_view name) {
  if (name.size() != name_prefix.size() + sequence_digits + name_suffix.size() ||
      !name.starts_with(name_prefix) || !name.ends_with(name_suffix)) {
    return std::nullopt;
  }
  const std::string_view digits = name.substr(name_prefix.size(), sequence_digits);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;  // > 2^64-1
  return v;
}

struct listed {
  std::uint64_t sequence;
  fs::path path;
};

// The directory's checkpoint files, oldest first.
model_result<std::vector<listed>> list_checkpoints(const fs::path& dir) {
  std::vector<listed> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto sequence = sequence_of(it->path().filename().string());
    std::error_code type_ec;
    if (sequence && it->is_regular_file(type_ec)) out.push_back({*sequence, it->path()});
  }
  if (ec) {
    return fail(model_errc::unreadable, "cannot list " + dir.string() + ": " + ec.message());
  }
  std::sort(out.begin(), out.end(),
            [](const listed& a, const listed& b) { return a.sequence < b.sequence; });
  return out;
}

// Creates `dir` with mode 0700 (its parents with the defaults) unless it exists.
model_result<void> ensure_directory(const fs::path& dir) {
  std::error_code ec;
  const auto status = fs::status(dir, ec);
  if (fs::exists(status)) return {};
  // A failure here shows as mkdir's ENOENT or EACCES below.
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  // EEXIST: someone created it meanwhile; open() checks what it is next.
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(model_errc::unwritable,
                "cannot create checkpoint directory " + dir.string() + ": " + std::strerror(errno));
  }
  return {};
}

// Why `model`, read from `path`, is not the checkpoint its name says, or nothing.
std::optional<model_error> verify(const fs::path& path, std::uint64_t sequence,
                                  const model_file& model) {
  const auto& meta = model.metadata();
  const auto recorded = meta.find(std::string(checkpoint_checksum_key));
  const auto number = meta.find(std::string(checkpoint_sequence_key));
  if (recorded == meta.end() || number == meta.end()) {
    return fail(checkpoint_errc::checksum_missing,
                path.string() + ": no " +
                    std::string(recorded == meta.end() ? checkpoint_checksum_key
                                                       : checkpoint_sequence_key) +
                    " in its metadata");
  }
  if (const auto computed = checkpoint_checksum(model); computed != recorded->second) {
    return fail(checkpoint_errc::checksum_mismatch,
                path.string() + ": checksum mismatch (recorded " + recorded->second +
                    ", contents hash to " + computed + ")");
  }
  // A valid checkpoint copied under another name would otherwise resume from the wrong point.
  if (number->second != std::to_string(sequence)) {
    return fail(checkpoint_errc::sequence_mismatch,
                path.string() + ": " + std::string(checkpoint_sequence_key) + " is '" +
                    number->second + "', but the file name says " + std::to_string(sequence));
  }
  return std::nullopt;
}

// A copy of `model` carrying the checkpoint keys for `sequence`.
// The model's metadata plus the two mws.checkpoint.* keys.
std::map<std::string, std::string> stamped(const model_view& model, std::uint64_t sequence) {
  auto meta = model.metadata();
  meta[std::string(checkpoint_sequence_key)] = std::to_string(sequence);
  meta[std::string(checkpoint_checksum_key)] = checkpoint_checksum(model.with(meta));
  return meta;
}

// Names that appear twice would be written as one JSON key: a checkpoint that cannot be read back.
std::optional<std::string> duplicate_name(const manifest& spec) {
  std::vector<std::string_view> names;
  for (const auto& t : spec.tensors)
    names.push_back(t.name);
  std::sort(names.begin(), names.end());
  const auto twice = std::adjacent_find(names.begin(), names.end());
  if (twice == names.end()) return std::nullopt;
  return std::string(*twice);
}

}  // namespace

const boost::system::error_category& checkpoint_category() noexcept {
  static const checkpoint_error_category category;
  return category;
}

std::string checkpoint_checksum(const model_view& model) {
  if (!model.misfit().empty()) return {};  // matches no recorded checksum
  transport::detail::ensure_sodium();
  const auto& tensors = model.spec().tensors;
  // Name order, whatever order the caller's manifest is in: a loaded model is sorted by name.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return tensors[a].name < tensors[b].name; });
  hasher h;
  h.str(encoding_tag);
  h.u64(tensors.size());
  for (const std::size_t i : order) {
    h.str(tensors[i].name);
    h.str(safetensors_dtype(tensors[i].type));
    h.u64(tensors[i].shape.size());
    for (const auto d : tensors[i].shape)
      h.u64(d);
    h.u64(model.tensor_bytes(i).size());
    h.bytes(model.tensor_bytes(i));
  }
  const auto& meta = model.metadata();  // a std::map: already in byte-wise key order
  h.u64(meta.size() - meta.count(std::string(checkpoint_checksum_key)));
  for (const auto& [key, value] : meta) {
    if (key == checkpoint_checksum_key) continue;
    h.str(key);
    h.str(value);
  }
  return h.hex();
}

std::string checkpoint_file_name(std::uint64_t sequence) {
  std::string digits = std::to_string(sequence);
  return std::string(name_prefix) + std::string(sequence_digits - digits.size(), '0') + digits +
         std::string(name_suffix);
}

model_result<checkpoint_store> checkpoint_store::open(const fs::path& dir, std::size_t keep) {
  MWS_ASSERT(keep >= 1);
  transport::detail::ensure_sodium();
  if (auto created = ensure_directory(dir); !created) return created.error();
  std::error_code ec;
  const bool is_directory = fs::is_directory(dir, ec);
  if (ec) {
    return fail(model_errc::unreadable,
                "cannot examine checkpoint directory " + dir.string() + ": " + ec.message());
  }
  if (!is_directory) {
    return fail(checkpoint_errc::not_a_directory,
                dir.string() + " is not a directory (checkpoints need a directory of their own)");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return fail(model_errc::unwritable, "checkpoint directory " + dir.string() +
                                            " is not writable: " + std::strerror(errno));
  }
  auto files = list_checkpoints(dir);
  if (!files) return files.error();
  // Sequence numbers start at 1; after 2^64 - 1 the next one wraps to 0, meaning "exhausted".
  const std::uint64_t next = files->empty() ? 1 : files->back().sequence + 1;
  return checkpoint_store(dir, keep, next);
}

model_result<checkpoint_saved> checkpoint_store::save(const model_view& model) {
  if (next_sequence_ == 0) {
    return fail(checkpoint_errc::sequence_exhausted,
                dir_.string() + ": checkpoint sequence numbers are used up");
  }
  if (auto misfit = model.misfit(); !misfit.empty()) {
    return fail(model_errc::manifest_mismatch, "checkpoint for " + dir_.string() + ": " + misfit);
  }
  if (auto twice = duplicate_name(model.spec())) {
    return fail(model_errc::bad_tensor_entry,
                "checkpoint for " + dir_.string() + ": tensor '" + *twice + "' appears twice");
  }
  // Used up before writing: a write that fails after its rename leaves the file behind, and a
  // later save must not reuse its number.
  const std::uint64_t sequence = next_sequence_++;
  const fs::path path = dir_ / checkpoint_file_name(sequence);
  const auto meta = stamped(model, sequence);
  if (auto written = save_safetensors(path, model.with(meta)); !written) {
    return written.error();
  }
  return checkpoint_saved{path, sequence, remove_old()};
}

std::vector<model_error> checkpoint_store::remove_old() const {
  std::vector<model_error> errors;
  auto files = list_checkpoints(dir_);
  if (!files) {
    errors.push_back(files.error());
    return errors;
  }
  const std::size_t excess = files->size() > keep_ ? files->size() - keep_ : 0;
  for (std::size_t i = 0; i < excess; ++i) {
    std::error_code ec;
    if (!fs::remove((*files)[i].path, ec) && ec) {
      errors.push_back(fail(model_errc::unwritable,
                            "cannot delete " + (*files)[i].path.string() + ": " + ec.message()));
    }
  }
  return errors;
}

model_result<checkpoint_loaded> checkpoint_store::load_latest() const {
  auto files = list_checkpoints(dir_);
  if (!files) return files.error();
  checkpoint_loaded out;
  for (auto it = files->rbegin(); it != files->rend(); ++it) {
    auto model = load_safetensors(it->path);
    if (!model) {
      out.skipped.push_back({it->path, model.error()});
      continue;
    }
    if (auto wrong = verify(it->path, it->sequence, *model)) {
      out.skipped.push_back({it->path, std::move(*wrong)});
      continue;
    }
    out.latest.emplace(checkpoint{std::move(*model), it->sequence, it->path});
    break;
  }
  return out;
}

}  // namespace mws::runtime
