#include "apps/mws-node/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <sodium.h>

namespace mws::node_app {
namespace {

using runtime::node_error;

// A bound on one random tensor (2^36 f32 elements = 256 GiB): beyond it a typo, not a model.
constexpr std::uint64_t random_init_elements_max = std::uint64_t{1} << 36;

std::optional<std::uint8_t> hex_value(char c) {
  if (c >= '0' && c <= '9') return static_cast<std::uint8_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<std::uint8_t>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<std::uint8_t>(c - 'A' + 10);
  return std::nullopt;
}

// 64 hex digits into 32 bytes.
std::optional<std::array<std::uint8_t, 32>> parse_key_hex(std::string_view text) {
  if (text.size() != 64) return std::nullopt;
  std::array<std::uint8_t, 32> out{};
  for (std::size_t i = 0; i < 32; ++i) {
    const auto hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
    if (!hi || !lo) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(*hi << 4 | *lo);
  }
  return out;
}

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

runtime::node_result<std::string> read_small_file(const std::filesystem::path& path, bool secret) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return node_error{path.string() + ": " + std::strerror(errno)};
  }
  if (!S_ISREG(st.st_mode)) return node_error{path.string() + ": not a regular file"};
  if (secret && (st.st_mode & 077) != 0) {
    return node_error{path.string() + ": group or others may access it; run chmod 600 " +
                      path.string()};
  }
  if (st.st_size > (1 << 20)) return node_error{path.string() + ": larger than 1 MiB"};
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) return node_error{path.string() + ": cannot read"};
  return {boost::system::in_place_value, text.str()};
}

runtime::node_result<std::vector<std::uint64_t>> parse_shape(const std::string& text) {
  std::vector<std::uint64_t> shape;
  std::stringstream in(text);
  std::string dim;
  while (std::getline(in, dim, 'x')) {
    char* end = nullptr;
    const auto v = std::strtoull(dim.c_str(), &end, 10);
    if (dim.empty() || *end != '\0' || v == 0 || v > (1ull << 40)) {
      return node_error{"'" + text + "' is not a shape like 1000 or 64x32"};
    }
    shape.push_back(v);
  }
  if (shape.empty()) return node_error{"empty shape"};
  std::uint64_t numel = 1;
  for (const auto d : shape) {
    if (numel > random_init_elements_max / d) {
      return node_error{"'" + text + "' has more than 2^36 elements"};
    }
    numel *= d;
  }
  return shape;
}

}  // namespace

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const auto b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

runtime::node_result<psk> load_psk_file(const std::filesystem::path& path) {
  auto text = read_small_file(path, true);
  if (!text) return text.error();
  auto key = parse_key_hex(trim(*text));
  if (!key) return node_error{path.string() + ": expected 64 hex digits (a 32-byte key)"};
  return *key;
}

runtime::node_result<void> create_psk_file(const std::filesystem::path& path) {
  psk key{};
  randombytes_buf(key.data(), key.size());
  const auto text = to_hex(key) + "\n";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return node_error{path.string() + ": " + std::strerror(errno)};
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return node_error{path.string() + ": cannot write"};
  return {};
}

runtime::node_result<std::vector<transport::public_key>> load_allowlist_file(
    const std::filesystem::path& path) {
  auto text = read_small_file(path, false);
  if (!text) return text.error();
  std::vector<transport::public_key> keys;
  std::stringstream in(*text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    auto key = parse_key_hex(line);
    if (!key) {
      return node_error{path.string() + " line " + std::to_string(number) +
                        ": expected a public key of 64 hex digits"};
    }
    keys.push_back(*key);
  }
  if (keys.empty()) return node_error{path.string() + ": no public keys in it"};
  return keys;
}

runtime::node_result<runtime::model_file> random_model(const std::string& spec,
                                                       std::uint64_t seed) {
  runtime::manifest m;
  std::stringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    runtime::tensor_spec t;
    std::vector<std::string> parts;
    std::stringstream fields(item);
    for (std::string f; std::getline(fields, f, ':');)
      parts.push_back(f);
    if (parts.size() == 1) parts = {"weights", parts[0]};
    if (parts.size() < 2 || parts.size() > 3 || parts[0].empty()) {
      return node_error{"random init '" + item + "': expected N or name:AxB[:dtype]"};
    }
    t.name = parts[0];
    auto shape = parse_shape(parts[1]);
    if (!shape) return node_error{"random init '" + item + "': " + shape.error().message};
    t.shape = std::move(*shape);
    if (parts.size() == 3) {
      auto type = gpu::parse_dtype(parts[2]);
      if (!type) return node_error{"random init '" + item + "': dtype must be f32, f16 or bf16"};
      t.type = *type;
    }
    m.tensors.push_back(std::move(t));
  }
  if (m.tensors.empty()) return node_error{"random init: no tensors"};
  std::sort(m.tensors.begin(), m.tensors.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (std::size_t i = 1; i < m.tensors.size(); ++i) {
    if (m.tensors[i].name == m.tensors[i - 1].name) {
      return node_error{"random init: tensor '" + m.tensors[i].name + "' named twice"};
    }
  }
  runtime::model_file model(m);
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (std::size_t i = 0; i < m.tensors.size(); ++i) {
    const auto bytes = model.tensor_bytes(i);
    const auto type = m.tensors[i].type;
    for (std::size_t k = 0; k < m.tensors[i].numel(); ++k)
      gpu::store_from_f32(bytes.data(), type, k, value(gen));
  }
  return model;
}

}  // namespace mws::node_app
