#include "runtime/model_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "temp_dir.hpp"

namespace mws::runtime {
namespace {

namespace fs = std::filesystem;

// A safetensors file from a header text and a data section, built byte by byte.
std::vector<std::byte> file_bytes(const std::string& header, std::size_t data_bytes,
                                  std::uint64_t declared_length = UINT64_MAX) {
  const std::uint64_t n = declared_length == UINT64_MAX ? header.size() : declared_length;
  std::vector<std::byte> f(8 + header.size() + data_bytes);
  for (std::size_t i = 0; i < 8; ++i)
    f[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(f.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data_bytes; ++i)
    f[8 + header.size() + i] = static_cast<std::byte>(i);
  return f;
}

model_errc code_of(const std::vector<std::byte>& f) {
  auto r = parse_safetensors(f);
  REQUIRE_FALSE(r.has_value());
  return static_cast<model_errc>(r.error().code.value());
}

std::string message_of(const std::vector<std::byte>& f) {
  auto r = parse_safetensors(f);
  REQUIRE_FALSE(r.has_value());
  return r.error().message;
}

using test::temp_dir;

TEST_CASE("a well-formed file loads with tensors sorted by name and aligned in memory") {
  // "b" (F16, 3 elements, 6 bytes) comes first in the file, "a" (F32, 2x1) after it at an
  // offset that is not a multiple of 4.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},)"
      R"("a":{"dtype":"F32","shape":[2,1],"data_offsets":[6,14]}})";
  auto r = parse_safetensors(file_bytes(header, 14));
  REQUIRE(r.has_value());
  const model_file& m = *r;
  REQUIRE(m.spec().tensors.size() == 2);
  CHECK(m.spec().tensors[0].name == "a");
  CHECK(m.spec().tensors[0].type == gpu::dtype::f32);
  CHECK(m.spec().tensors[0].shape == std::vector<std::uint64_t>{2, 1});
  CHECK(m.spec().tensors[1].name == "b");
  CHECK(reinterpret_cast<std::uintptr_t>(m.tensor_bytes(0).data()) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(m.tensor_bytes(1).data()) % 64 == 0);
  CHECK(std::to_integer<int>(m.tensor_bytes(0)[0]) == 6);  // the bytes from file offset 6
  CHECK(std::to_integer<int>(m.tensor_bytes(1)[5]) == 5);
  CHECK(m.metadata().at("format") == "pt");
  CHECK(m.spec().summary() == "2 tensors, 5 parameters, 14 bytes");
}

TEST_CASE("save then load returns the same tensors, bytes and metadata") {
  temp_dir dir;
  manifest spec{{{"layer.bias", gpu::dtype::bf16, {5}},
                 {"layer.weight", gpu::dtype::f32, {3, 7}},
                 {"scalar", gpu::dtype::f16, {}},
                 {"empty", gpu::dtype::f32, {0, 4}}}};
  std::sort(spec.tensors.begin(), spec.tensors.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  model_file m(spec);
  for (std::size_t i = 0; i < spec.tensors.size(); ++i) {
    auto bytes = m.tensor_bytes(i);
    for (std::size_t j = 0; j < bytes.size(); ++j)
      bytes[j] = static_cast<std::byte>(i * 31 + j);
  }
  m.metadata()["mws.weight"] = "1.5";
  const fs::path path = dir.path / "model.safetensors";
  REQUIRE(save_safetensors(path, m).has_value());
  auto back = load_safetensors(path);
  REQUIRE(back.has_value());
  CHECK(back->spec() == spec);
  CHECK(back->metadata().at("mws.weight") == "1.5");
  for (std::size_t i = 0; i < spec.tensors.size(); ++i) {
    CHECK(std::equal(m.tensor_bytes(i).begin(), m.tensor_bytes(i).end(),
                     back->tensor_bytes(i).begin(), back->tensor_bytes(i).end()));
  }
  // Only the file itself is left behind: no temporary files.
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
  // The header is padded so that the data section starts 8-byte aligned.
  std::ifstream f(path, std::ios::binary);
  std::uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
}

TEST_CASE("truncated, oversized and non-JSON headers are refused with specific errors") {
  CHECK(code_of({}) == model_errc::too_short);
  CHECK(code_of(std::vector<std::byte>(5)) == model_errc::too_short);
  CHECK(code_of(file_bytes("{}", 0, 1'000)) == model_errc::header_too_large);
  CHECK(code_of(file_bytes("{}", 0, 200'000'000)) == model_errc::header_too_large);
  CHECK(code_of(file_bytes("[1,2]", 0)) == model_errc::bad_header_json);
  CHECK(code_of(file_bytes("{\"a\":", 0)) == model_errc::bad_header_json);
  CHECK(code_of(file_bytes("\xff\xfe", 0)) == model_errc::bad_header_json);
  CHECK(code_of(file_bytes(std::string(100, '[') + std::string(100, ']'), 0)) ==
        model_errc::bad_header_json);  // nesting beyond the depth limit
  CHECK(code_of(file_bytes(R"({"__metadata__":{"k":1}})", 0)) == model_errc::bad_header_json);
}

TEST_CASE("a malformed tensor entry is refused with an error naming the tensor") {
  auto one = [](const std::string& entry, std::size_t data) {
    return file_bytes("{\"w\":" + entry + "}", data);
  };
  CHECK(code_of(one(R"({"dtype":"F32","shape":[1]})", 4)) == model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1})", 4)) ==
        model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})", 4)) ==
        model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4)) ==
        model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", 4)) ==
        model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", 4)) ==
        model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})", 4)) ==
        model_errc::bad_tensor_entry);
  CHECK(code_of(one(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})", 8)) ==
        model_errc::unsupported_dtype);
  CHECK(code_of(one(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", 4)) ==
        model_errc::unsupported_dtype);
  CHECK(message_of(one(R"({"dtype":"I64","shape":[1],"data_offsets":[0,8]})", 8))
            .find("tensor 'w'") != std::string::npos);
  CHECK(code_of(file_bytes(R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4)) ==
        model_errc::bad_tensor_entry);
}

TEST_CASE("sizes that overflow or disagree with the shape are refused") {
  auto one = [](const std::string& entry, std::size_t data) {
    return file_bytes("{\"w\":" + entry + "}", data);
  };
  CHECK(code_of(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]})",
                    4)) == model_errc::size_overflow);
  CHECK(code_of(one(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]})", 4)) ==
        model_errc::size_overflow);
  CHECK(code_of(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", 4)) ==
        model_errc::size_mismatch);
  CHECK(message_of(one(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})", 20)) ==
        "tensor 'w': shape [2, 3] holds 6 elements of F32 = 24 bytes, but data_offsets span 20");
  CHECK(code_of(one(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})", 8)) ==
        model_errc::bad_offsets);
}

TEST_CASE("offsets with gaps, overlaps, past the end or with trailing bytes are refused") {
  const std::string a = R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  CHECK(code_of(file_bytes("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                           12)) == model_errc::bad_offsets);  // gap
  CHECK(code_of(file_bytes("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                           6)) == model_errc::bad_offsets);                    // overlap
  CHECK(code_of(file_bytes("{" + a + "}", 2)) == model_errc::bad_offsets);     // past the end
  CHECK(code_of(file_bytes("{" + a + "}", 9)) == model_errc::trailing_bytes);  // left over
  CHECK(code_of(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)) ==
        model_errc::bad_offsets);  // does not start at zero
}

TEST_CASE("load_safetensors reports missing and truncated files by path") {
  temp_dir dir;
  auto missing = load_safetensors(dir.path / "nope.safetensors");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == model_errc::unreadable);
  CHECK(missing.error().message.find("nope.safetensors") != std::string::npos);

  const std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  const auto whole = file_bytes(header, 16);
  const fs::path path = dir.path / "cut.safetensors";
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(whole.data()),
             static_cast<std::streamsize>(whole.size() - 3));
  auto cut = load_safetensors(path);
  REQUIRE_FALSE(cut.has_value());
  CHECK(cut.error().code == model_errc::bad_offsets);
  CHECK(cut.error().message.find("cut.safetensors") != std::string::npos);
}

TEST_CASE("save_safetensors into a missing directory fails cleanly and leaves nothing") {
  temp_dir dir;
  model_file m(manifest{{{"w", gpu::dtype::f32, {2}}}});
  auto r = save_safetensors(dir.path / "no" / "such" / "dir.safetensors", m);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == model_errc::unwritable);
  CHECK(fs::is_empty(dir.path));
}

TEST_CASE("save_safetensors writes a view of memory it does not own; a misfit view, nothing") {
  temp_dir dir;
  const manifest spec{{{"a", gpu::dtype::f32, {2}}, {"b", gpu::dtype::f16, {3}}}};
  std::vector<std::byte> a(8), b(6);
  for (std::size_t i = 0; i < a.size(); ++i)
    a[i] = static_cast<std::byte>(i + 1);
  for (std::size_t i = 0; i < b.size(); ++i)
    b[i] = static_cast<std::byte>(0x40 + i);
  const std::map<std::string, std::string> meta{{"k", "v"}};
  const fs::path path = dir.path / "view.safetensors";
  REQUIRE(save_safetensors(path, model_view(spec, {a, b}, meta)).has_value());
  auto loaded = load_safetensors(path);
  REQUIRE(loaded.has_value());
  CHECK(loaded->spec() == spec);
  CHECK(std::memcmp(loaded->tensor_bytes(0).data(), a.data(), a.size()) == 0);
  CHECK(std::memcmp(loaded->tensor_bytes(1).data(), b.data(), b.size()) == 0);
  CHECK(loaded->metadata().at("k") == "v");

  const fs::path bad = dir.path / "bad.safetensors";
  auto short_tensor = save_safetensors(bad, model_view(spec, {a, std::span(b).first(4)}, meta));
  REQUIRE_FALSE(short_tensor.has_value());
  CHECK(short_tensor.error().code == model_errc::manifest_mismatch);
  CHECK(short_tensor.error().message.find("'b'") != std::string::npos);
  auto one_missing = save_safetensors(bad, model_view(spec, {a}, meta));
  REQUIRE_FALSE(one_missing.has_value());
  CHECK(one_missing.error().code == model_errc::manifest_mismatch);
  CHECK_FALSE(fs::exists(bad));
}

TEST_CASE("describe_difference names the first differing tensor") {
  manifest a{{{"w", gpu::dtype::f32, {2, 3}}}};
  manifest b{{{"w", gpu::dtype::bf16, {2, 3}}}};
  CHECK(describe_difference(a, a).empty());
  CHECK(describe_difference(a, b) == "tensor 'w' f32 [2, 3] here, 'w' bf16 [2, 3] there");
  manifest c{{{"w", gpu::dtype::f32, {2, 3}}, {"x", gpu::dtype::f32, {1}}}};
  CHECK(describe_difference(a, c) == "1 tensors here, 2 there; tensor 'x' f32 [1] only there");
  CHECK(describe_difference(c, a) == "2 tensors here, 1 there; tensor 'x' f32 [1] only here");
  manifest d{{{"v", gpu::dtype::f32, {1}}, {"w", gpu::dtype::f32, {2, 3}}}};
  CHECK(describe_difference(c, d) == "tensor 'v' f32 [1] only there");
}

}  // namespace
}  // namespace mws::runtime
