#include "runtime/checkpoint.hpp"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "temp_dir.hpp"

namespace mws::runtime {
namespace {

namespace fs = std::filesystem;

using test::temp_dir;

// What a node would checkpoint: its model, its running sums, w and peers in metadata. `seed`
// makes every tensor byte and the peer address differ between states.
model_file node_state(int seed) {
  model_file m(manifest{{{"sums.w", gpu::dtype::f32, {}},
                         {"sums.x", gpu::dtype::f32, {2, 3}},
                         {"x", gpu::dtype::bf16, {2, 3}}}});
  for (std::size_t i = 0; i < m.spec().tensors.size(); ++i) {
    auto bytes = m.tensor_bytes(i);
    for (std::size_t j = 0; j < bytes.size(); ++j)
      bytes[j] = static_cast<std::byte>(seed * 31 + static_cast<int>(i * 7 + j));
  }
  m.metadata()["w"] = "0.5";
  m.metadata()["peers"] = "peer-" + std::to_string(seed) + ".example:7000";
  return m;
}

bool same_tensors(const model_file& a, const model_file& b) {
  if (!(a.spec() == b.spec())) return false;
  for (std::size_t i = 0; i < a.spec().tensors.size(); ++i) {
    const auto x = a.tensor_bytes(i);
    const auto y = b.tensor_bytes(i);
    if (x.size() != y.size() || std::memcmp(x.data(), y.data(), x.size()) != 0) return false;
  }
  return true;
}

std::vector<char> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// Where the tensor bytes of a safetensors file begin.
std::size_t data_offset(const std::vector<char>& file) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(file[static_cast<std::size_t>(i)]);
  return 8 + static_cast<std::size_t>(n);
}

checkpoint_store open_store(const fs::path& dir) {
  auto store = checkpoint_store::open(dir);
  REQUIRE(store.has_value());
  return std::move(*store);
}

// Checkpoints 1 and 2 of node_state(1) and node_state(2); returns the path of the newest.
fs::path two_checkpoints(checkpoint_store& store) {
  REQUIRE(store.save(node_state(1)).has_value());
  auto second = store.save(node_state(2));
  REQUIRE(second.has_value());
  return second->path;
}

// Loads and checks that checkpoint 1 was chosen because `newest` was skipped with `why`.
void expect_fallback(const checkpoint_store& store, const fs::path& newest,
                     boost::system::error_code why) {
  auto loaded = store.load_latest();
  REQUIRE(loaded.has_value());
  REQUIRE(loaded->latest.has_value());
  CHECK(loaded->latest->sequence == 1);
  CHECK(same_tensors(loaded->latest->model, node_state(1)));
  CHECK(loaded->latest->model.metadata().at("peers") == "peer-1.example:7000");
  REQUIRE(loaded->skipped.size() == 1);
  CHECK(loaded->skipped[0].path == newest);
  CHECK(loaded->skipped[0].reason.code == why);
  CHECK(loaded->skipped[0].reason.message.find(newest.filename().string()) != std::string::npos);
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST_CASE("save then load_latest returns the same tensors, metadata and sequence number") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  auto saved = store.save(node_state(1));
  REQUIRE(saved.has_value());
  CHECK(saved->sequence == 1);
  CHECK(saved->path == tmp.path / "checkpoint-00000000000000000001.safetensors");
  CHECK(saved->not_removed.empty());

  auto loaded = store.load_latest();
  REQUIRE(loaded.has_value());
  REQUIRE(loaded->latest.has_value());
  CHECK(loaded->skipped.empty());
  const checkpoint& c = *loaded->latest;
  CHECK(c.sequence == 1);
  CHECK(c.path == saved->path);
  CHECK(same_tensors(c.model, node_state(1)));
  CHECK(c.model.metadata().at("w") == "0.5");
  CHECK(c.model.metadata().at("peers") == "peer-1.example:7000");
  CHECK(c.model.metadata().at(std::string(checkpoint_sequence_key)) == "1");
  CHECK(c.model.metadata().at(std::string(checkpoint_checksum_key)) ==
        checkpoint_checksum(c.model));
  CHECK(c.model.metadata().size() == 4);
}

TEST_CASE("saving a loaded checkpoint replaces its sequence number and checksum") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  REQUIRE(store.save(node_state(1)).has_value());
  auto first = store.load_latest();
  REQUIRE(first.has_value());
  REQUIRE(first->latest.has_value());
  REQUIRE(store.save(first->latest->model).has_value());
  auto second = store.load_latest();
  REQUIRE(second.has_value());
  REQUIRE(second->latest.has_value());
  CHECK(second->skipped.empty());
  CHECK(second->latest->sequence == 2);
  CHECK(second->latest->model.metadata().at(std::string(checkpoint_sequence_key)) == "2");
  CHECK(same_tensors(second->latest->model, node_state(1)));
}

TEST_CASE("an empty directory holds no checkpoint, which is not an error") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  CHECK(store.next_sequence() == 1);
  auto loaded = store.load_latest();
  REQUIRE(loaded.has_value());
  CHECK_FALSE(loaded->latest.has_value());
  CHECK(loaded->skipped.empty());
}

TEST_CASE("open creates a missing directory, parents included, with mode 0700") {
  temp_dir tmp;
  const fs::path dir = tmp.path / "state" / "checkpoints";
  auto store = checkpoint_store::open(dir);
  REQUIRE(store.has_value());
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0777) == 0700);
  CHECK(store->directory() == dir);
}

TEST_CASE("open refuses a path that is a regular file and names it") {
  temp_dir tmp;
  const fs::path file = tmp.path / "not-a-dir";
  write_all(file, {'x'});
  auto store = checkpoint_store::open(file);
  REQUIRE_FALSE(store.has_value());
  CHECK(store.error().code == checkpoint_errc::not_a_directory);
  CHECK(store.error().message.find(file.string()) != std::string::npos);
}

TEST_CASE("only the newest two checkpoints remain, and other files are never deleted") {
  temp_dir tmp;
  const std::vector<std::string> others = {
      ".checkpoint-00000000000000000001.safetensors.tmp.99",  // a crashed writer's leftover
      "checkpoint-00000000000000000001.safetensors.bak", "checkpoint-1.safetensors",
      "checkpoint-0000000000000000000x.safetensors", "notes.txt"};
  for (const auto& name : others)
    write_all(tmp.path / name, {'x'});
  auto store = open_store(tmp.path);
  CHECK(store.next_sequence() == 1);
  for (int i = 1; i <= 4; ++i) {
    auto saved = store.save(node_state(i));
    REQUIRE(saved.has_value());
    CHECK(saved->not_removed.empty());
  }
  std::vector<std::string> expected = others;
  expected.push_back("checkpoint-00000000000000000003.safetensors");
  expected.push_back("checkpoint-00000000000000000004.safetensors");
  std::sort(expected.begin(), expected.end());
  CHECK(names_in(tmp.path) == expected);

  auto loaded = store.load_latest();
  REQUIRE(loaded.has_value());
  REQUIRE(loaded->latest.has_value());
  CHECK(loaded->latest->sequence == 4);
  CHECK(loaded->skipped.empty());  // the other files are not checkpoints, so not skipped either
}

TEST_CASE("a keep of three keeps three") {
  temp_dir tmp;
  auto store = checkpoint_store::open(tmp.path, 3);
  REQUIRE(store.has_value());
  for (int i = 1; i <= 5; ++i)
    REQUIRE(store->save(node_state(i)).has_value());
  CHECK(names_in(tmp.path) ==
        std::vector<std::string>{"checkpoint-00000000000000000003.safetensors",
                                 "checkpoint-00000000000000000004.safetensors",
                                 "checkpoint-00000000000000000005.safetensors"});
}

TEST_CASE("a truncated newest checkpoint (torn write) falls back to the previous one") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  const fs::path newest = two_checkpoints(store);
  auto bytes = read_all(newest);
  bytes.resize(bytes.size() - 5);  // inside the last tensor's data
  write_all(newest, bytes);
  expect_fallback(store, newest, model_errc::bad_offsets);
}

TEST_CASE("a newest checkpoint cut inside its header falls back to the previous one") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  const fs::path newest = two_checkpoints(store);
  auto bytes = read_all(newest);
  bytes.resize(20);
  write_all(newest, bytes);
  expect_fallback(store, newest, model_errc::header_too_large);
}

TEST_CASE("a flipped byte in tensor data falls back to the previous checkpoint") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  const fs::path newest = two_checkpoints(store);
  auto bytes = read_all(newest);
  bytes[data_offset(bytes) + 3] ^= 0x10;
  write_all(newest, bytes);
  expect_fallback(store, newest, checkpoint_errc::checksum_mismatch);
}

TEST_CASE("a flipped metadata value falls back to the previous checkpoint") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  const fs::path newest = two_checkpoints(store);
  auto bytes = read_all(newest);
  const std::string value = "peer-2.example";
  const auto at = std::search(bytes.begin(), bytes.end(), value.begin(), value.end());
  REQUIRE(at != bytes.end());
  at[5] = '3';  // still valid JSON, now "peer-3.example:7000"
  write_all(newest, bytes);
  expect_fallback(store, newest, checkpoint_errc::checksum_mismatch);
}

TEST_CASE("a newest checkpoint without a checksum falls back to the previous one") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  const fs::path newest = two_checkpoints(store);
  auto model = load_safetensors(newest);
  REQUIRE(model.has_value());
  model->metadata().erase(std::string(checkpoint_checksum_key));
  REQUIRE(save_safetensors(newest, *model).has_value());
  expect_fallback(store, newest, checkpoint_errc::checksum_missing);
}

TEST_CASE("a valid checkpoint copied under a newer number is skipped") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  two_checkpoints(store);
  // Checkpoint 1's bytes, named 2: its checksum holds, but it would resume from the wrong point.
  const fs::path second = tmp.path / checkpoint_file_name(2);
  fs::copy_file(tmp.path / checkpoint_file_name(1), second, fs::copy_options::overwrite_existing);
  expect_fallback(store, second, checkpoint_errc::sequence_mismatch);
}

TEST_CASE("when every checkpoint is corrupt, each is reported newest first and none returned") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  const fs::path newest = two_checkpoints(store);
  const fs::path oldest = tmp.path / checkpoint_file_name(1);
  auto bytes = read_all(newest);
  bytes.resize(bytes.size() - 1);
  write_all(newest, bytes);
  bytes = read_all(oldest);
  bytes.back() ^= 0x01;
  write_all(oldest, bytes);

  auto loaded = store.load_latest();
  REQUIRE(loaded.has_value());
  CHECK_FALSE(loaded->latest.has_value());
  REQUIRE(loaded->skipped.size() == 2);
  CHECK(loaded->skipped[0].path == newest);
  CHECK(loaded->skipped[0].reason.code == model_errc::bad_offsets);
  CHECK(loaded->skipped[1].path == oldest);
  CHECK(loaded->skipped[1].reason.code == checkpoint_errc::checksum_mismatch);
}

TEST_CASE("sequence numbers continue after reopening, past a corrupt newest file") {
  temp_dir tmp;
  fs::path newest;
  {
    auto store = open_store(tmp.path);
    newest = two_checkpoints(store);
  }
  write_all(newest, {'x'});  // unreadable, but its number is taken
  auto store = open_store(tmp.path);
  CHECK(store.next_sequence() == 3);
  auto saved = store.save(node_state(3));
  REQUIRE(saved.has_value());
  CHECK(saved->sequence == 3);
  CHECK(saved->path.filename() == "checkpoint-00000000000000000003.safetensors");
  auto loaded = store.load_latest();
  REQUIRE(loaded.has_value());
  REQUIRE(loaded->latest.has_value());
  CHECK(loaded->latest->sequence == 3);
  CHECK(same_tensors(loaded->latest->model, node_state(3)));
}

TEST_CASE("a failed save names the file and uses up its sequence number") {
  temp_dir tmp;
  const fs::path dir = tmp.path / "gone";
  auto store = checkpoint_store::open(dir);
  REQUIRE(store.has_value());
  fs::remove(dir);
  auto failed = store->save(node_state(1));
  REQUIRE_FALSE(failed.has_value());
  CHECK(failed.error().code == model_errc::unwritable);
  CHECK(failed.error().message.find(checkpoint_file_name(1)) != std::string::npos);
  CHECK(store->next_sequence() == 2);
}

TEST_CASE("a model with a tensor name twice is refused rather than written unreadable") {
  temp_dir tmp;
  auto store = open_store(tmp.path);
  model_file twice(manifest{{{"x", gpu::dtype::f32, {1}}, {"x", gpu::dtype::f32, {1}}}});
  auto saved = store.save(twice);
  REQUIRE_FALSE(saved.has_value());
  CHECK(saved.error().message.find("'x'") != std::string::npos);
  CHECK(names_in(tmp.path).empty());
}

TEST_CASE("a checkpoint saved from a view of memory equals one saved from a model_file") {
  temp_dir a_dir, b_dir;
  auto a = open_store(a_dir.path);
  auto b = open_store(b_dir.path);
  const auto state = node_state(4);
  std::vector<std::vector<std::byte>> elsewhere;  // the node's own memory, say
  std::vector<std::span<const std::byte>> spans;
  for (std::size_t i = 0; i < state.spec().tensors.size(); ++i) {
    const auto t = state.tensor_bytes(i);
    elsewhere.emplace_back(t.begin(), t.end());
  }
  for (const auto& t : elsewhere)
    spans.emplace_back(t);
  auto from_file = a.save(state);
  auto from_view = b.save(model_view(state.spec(), spans, state.metadata()));
  REQUIRE(from_file.has_value());
  REQUIRE(from_view.has_value());
  CHECK(read_all(from_file->path) == read_all(from_view->path));

  spans.pop_back();  // a view that does not fit its manifest: refused, its number kept
  auto misfit = b.save(model_view(state.spec(), spans, state.metadata()));
  REQUIRE_FALSE(misfit.has_value());
  CHECK(misfit.error().code == model_errc::manifest_mismatch);
  CHECK(b.next_sequence() == 2);
}

// The canonical encoding built by hand, as the header documents it.
struct encoding {
  std::vector<unsigned char> bytes;
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i)
      bytes.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }
  void raw(std::span<const std::byte> b) {
    for (auto c : b)
      bytes.push_back(std::to_integer<unsigned char>(c));
  }
  void str(std::string_view s) {
    u64(s.size());
    raw(std::as_bytes(std::span<const char>(s)));
  }
  std::string blake2b_256_hex() const {
    unsigned char digest[32];
    crypto_generichash(digest, sizeof digest, bytes.data(), bytes.size(), nullptr, 0);
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    return hex;
  }
};

TEST_CASE("the checksum is BLAKE2b-256 of the documented canonical encoding") {
  REQUIRE(sodium_init() >= 0);
  // Out of name order on purpose: the encoding sorts by name.
  model_file m(manifest{{{"b", gpu::dtype::f16, {2}}, {"a", gpu::dtype::f32, {}}}});
  for (std::size_t i = 0; i < 2; ++i) {
    auto bytes = m.tensor_bytes(i);
    for (std::size_t j = 0; j < bytes.size(); ++j)
      bytes[j] = static_cast<std::byte>(0x10 * (i + 1) + j);
  }
  m.metadata()["k"] = "v";
  m.metadata()[std::string(checkpoint_checksum_key)] = "not covered";

  encoding e;
  e.str("mws.checkpoint/1");
  e.u64(2);
  e.str("a");
  e.str("F32");
  e.u64(0);
  e.u64(4);
  e.raw(m.tensor_bytes(1));
  e.str("b");
  e.str("F16");
  e.u64(1);
  e.u64(2);
  e.u64(4);
  e.raw(m.tensor_bytes(0));
  e.u64(1);
  e.str("k");
  e.str("v");
  CHECK(checkpoint_checksum(m) == e.blake2b_256_hex());
  CHECK(checkpoint_checksum(m).size() == 64);
}

TEST_CASE("the checksum covers shape and dtype, not only the bytes") {
  model_file flat(manifest{{{"x", gpu::dtype::f16, {4}}}});
  model_file square(manifest{{{"x", gpu::dtype::f16, {2, 2}}}});
  model_file other_type(manifest{{{"x", gpu::dtype::bf16, {4}}}});
  CHECK(checkpoint_checksum(flat) != checkpoint_checksum(square));
  CHECK(checkpoint_checksum(flat) != checkpoint_checksum(other_type));
}

TEST_CASE("checkpoint file names are zero-padded to 20 digits") {
  CHECK(checkpoint_file_name(0) == "checkpoint-00000000000000000000.safetensors");
  CHECK(checkpoint_file_name(42) == "checkpoint-00000000000000000042.safetensors");
  CHECK(checkpoint_file_name(UINT64_MAX) == "checkpoint-18446744073709551615.safetensors");
}

TEST_CASE("after checkpoint 2^64 - 1 a save is refused, not wrapped around") {
  temp_dir tmp;
  write_all(tmp.path / checkpoint_file_name(UINT64_MAX), {'x'});
  auto store = open_store(tmp.path);
  CHECK(store.next_sequence() == 0);
  auto saved = store.save(node_state(1));
  REQUIRE_FALSE(saved.has_value());
  CHECK(saved.error().code == checkpoint_errc::sequence_exhausted);
}

}  // namespace
}  // namespace mws::runtime
