// Checkpoints: crash-safe snapshots of a node's state in a directory of its own.
//
// A checkpoint is a model_file that the node fills (its model x, its running sums as extra
// tensors, scalars such as w, sequence numbers and peer addresses in metadata); the store does not
// interpret it. Each save writes <dir>/checkpoint-<sequence, 20 digits>.safetensors atomically
// (temporary file, fsync, rename, fsync of the directory) after adding two metadata keys:
//   mws.checkpoint.sequence  the sequence number in decimal, equal to the one in the file name;
//   mws.checkpoint.checksum  lowercase hex BLAKE2b-256 of the canonical encoding below.
// Loading walks the checkpoints newest first and returns the first one that parses and whose
// checksum and sequence number match, with the newer ones it skipped and why: a torn write or a
// flipped bit in the newest costs one checkpoint interval rather than the node's whole state.
//
// Canonical encoding (all integers u64 little-endian; str(s) = u64(byte length of s) || s):
//   str("mws.checkpoint/1")
//   u64(number of tensors)
//   per tensor, in ascending byte-wise order of name:
//     str(name) || str(dtype as safetensors spells it: "F32", "F16" or "BF16")
//     || u64(rank) || u64(each dimension) || u64(byte length) || the tensor's bytes
//   u64(number of metadata entries other than mws.checkpoint.checksum)
//   per such entry, in ascending byte-wise order of key: str(key) || str(value)
// The length prefixes make the encoding injective (no two different checkpoints encode alike),
// and it depends neither on the order of the file's JSON nor on where the tensors lie in it.
//
// Files in the directory whose names do not match the pattern (including the writer's
// ".checkpoint-....tmp.<pid>" leftovers of a crash) are ignored and never deleted.
//
// Threading: a checkpoint_store is a plain object with no locking; one thread uses it at a time,
// and one store (in one process) owns a directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/system/error_code.hpp>

#include "runtime/model_file.hpp"

namespace mws::runtime {

// Why a checkpoint directory or file cannot be used, beyond the model_errc of reading and writing.
enum class checkpoint_errc {
  ok = 0,
  not_a_directory = 1,  // the store's path exists and is not a directory
  checksum_missing,     // mws.checkpoint.checksum or mws.checkpoint.sequence is absent
  checksum_mismatch,    // the contents do not hash to the recorded checksum
  sequence_mismatch,    // mws.checkpoint.sequence differs from the number in the file name
  sequence_exhausted,   // checkpoint 2^64 - 1 exists; no later number is left
};

const boost::system::error_category& checkpoint_category() noexcept;
inline boost::system::error_code make_error_code(checkpoint_errc e) noexcept {
  return {static_cast<int>(e), checkpoint_category()};
}

inline constexpr std::string_view checkpoint_sequence_key = "mws.checkpoint.sequence";
inline constexpr std::string_view checkpoint_checksum_key = "mws.checkpoint.checksum";

// Lowercase hex BLAKE2b-256 of the canonical encoding of `model` (every metadata entry counts
// except mws.checkpoint.checksum itself); empty for a view that does not fit its manifest.
std::string checkpoint_checksum(const model_view& model);

// "checkpoint-00000000000000000042.safetensors"
std::string checkpoint_file_name(std::uint64_t sequence);

struct checkpoint {
  model_file model;  // as saved, mws.checkpoint.* metadata included
  std::uint64_t sequence = 0;
  std::filesystem::path path;
};

struct skipped_checkpoint {
  std::filesystem::path path;
  model_error reason;  // the message names the file ("...: checksum mismatch ...")
};

struct checkpoint_loaded {
  std::optional<checkpoint> latest;         // empty: no usable checkpoint (not an error)
  std::vector<skipped_checkpoint> skipped;  // newer files that were unusable, newest first
};

struct checkpoint_saved {
  std::filesystem::path path;
  std::uint64_t sequence = 0;
  // Old checkpoints that could not be deleted. The new one is durable regardless; the next save
  // tries again.
  std::vector<model_error> not_removed;
};

class checkpoint_store {
 public:
  // Opens `dir`, creating it (mode 0700, parents as needed) when missing. Fails when the path
  // is not a directory, cannot be listed or is not writable. The next save continues after the
  // highest sequence number among the directory's checkpoint files, usable or not, so a number
  // is never written twice. `keep` (asserted >= 1) checkpoints are kept after each save.
  static model_result<checkpoint_store> open(const std::filesystem::path& dir,
                                             std::size_t keep = 2);

  // Writes `model` plus the two mws.checkpoint.* keys (replacing any it carries, e.g. from a
  // loaded checkpoint) as the next checkpoint, then deletes all but the newest `keep` checkpoint
  // files. Those are counted by number, not verified (that would read every one on each save):
  // the one just written is known good, older ones may not be. The tensors are read where they
  // lie, twice (checksum, then write), and not copied. The sequence number is used up even when
  // the write fails.
  model_result<checkpoint_saved> save(const model_view& model);

  // The newest checkpoint that parses, matches its checksum and its name, and the newer ones
  // skipped on the way. Fails only when the directory cannot be listed.
  model_result<checkpoint_loaded> load_latest() const;

  const std::filesystem::path& directory() const noexcept { return dir_; }
  // 0 once 2^64 - 1 has been used (sequence numbers start at 1).
  std::uint64_t next_sequence() const noexcept { return next_sequence_; }

 private:
  checkpoint_store(std::filesystem::path dir, std::size_t keep, std::uint64_t next_sequence)
      : dir_(std::move(dir)), keep_(keep), next_sequence_(next_sequence) {}
  std::vector<model_error> remove_old() const;

  std::filesystem::path dir_;
  std::size_t keep_;
  std::uint64_t next_sequence_;
};

}  // namespace mws::runtime

template <>
struct boost::system::is_error_code_enum<mws::runtime::checkpoint_errc> : std::true_type {};
