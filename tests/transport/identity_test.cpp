#include "transport/identity.hpp"

#include <sys/stat.h>

#include <fstream>

#include <doctest/doctest.h>

#include "tests/transport/support.hpp"
#include "transport/error.hpp"

namespace mws::transport {
namespace {

std::vector<char> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::filesystem::path& p, const std::vector<char>& bytes, mode_t mode) {
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  REQUIRE(::chmod(p.c_str(), mode) == 0);
}

TEST_CASE("a saved identity loads back with the same keys and a 0600 file") {
  test::temp_dir dir;
  const auto path = dir.path() / "node.key";
  const identity id = identity::generate();
  REQUIRE(save_identity(path, id).has_value());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(std::filesystem::file_size(path) == key_file_bytes);
  auto loaded = load_identity(path);
  REQUIRE(loaded.has_value());
  CHECK(loaded->public_key_bytes() == id.public_key_bytes());
  CHECK(loaded->secret_key_bytes() == id.secret_key_bytes());
  CHECK(loaded->id() == id.id());
  CHECK(id.id().to_string().size() == 32);
  // No temporary files are left beside the key.
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()),
                      std::filesystem::directory_iterator()) == 1);
}

TEST_CASE("saving never replaces an existing key file") {
  test::temp_dir dir;
  const auto path = dir.path() / "node.key";
  const identity first = identity::generate();
  REQUIRE(save_identity(path, first).has_value());
  auto second = save_identity(path, identity::generate());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error() == make_error_code(errc::key_file_exists));
  CHECK(load_identity(path)->public_key_bytes() == first.public_key_bytes());
}

TEST_CASE("load_or_create creates once and then keeps the identity") {
  test::temp_dir dir;
  const auto path = dir.path() / "sub.key";
  auto a = load_or_create_identity(path);
  auto b = load_or_create_identity(path);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(a->public_key_bytes() == b->public_key_bytes());
}

TEST_CASE("damaged or exposed key files are refused with their specific error") {
  test::temp_dir dir;
  const auto path = dir.path() / "node.key";
  REQUIRE(save_identity(path, identity::generate()).has_value());
  const auto good = read_all(path);
  const auto bad = dir.path() / "bad.key";

  SUBCASE("missing file") {
    CHECK(load_identity(dir.path() / "absent.key").error() ==
          make_error_code(errc::key_file_unreadable));
  }
  SUBCASE("too short") {
    write_all(bad, std::vector<char>(good.begin(), good.end() - 1), 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_size));
  }
  SUBCASE("too long") {
    auto longer = good;
    longer.push_back('x');
    write_all(bad, longer, 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_size));
  }
  SUBCASE("empty") {
    write_all(bad, {}, 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_size));
  }
  SUBCASE("wrong magic") {
    auto changed = good;
    changed[0] = 'X';
    write_all(bad, changed, 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_format));
  }
  SUBCASE("wrong version") {
    auto changed = good;
    changed[7] = 2;
    write_all(bad, changed, 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_format));
  }
  SUBCASE("a flipped bit in the secret key") {
    auto changed = good;
    changed[8 + 5] = static_cast<char>(changed[8 + 5] ^ 0x10);
    write_all(bad, changed, 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_corrupt));
  }
  SUBCASE("a flipped bit in the public key") {
    auto changed = good;
    changed[40 + 31] = static_cast<char>(changed[40 + 31] ^ 0x01);
    write_all(bad, changed, 0600);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_corrupt));
  }
  SUBCASE("readable by others") {
    write_all(bad, good, 0644);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_permissions));
  }
  SUBCASE("readable by the group") {
    write_all(bad, good, 0640);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_permissions));
  }
  SUBCASE("writable by the group only") {
    write_all(bad, good, 0620);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_permissions));
  }
  SUBCASE("owner read-only is accepted") {
    write_all(bad, good, 0400);
    CHECK(load_identity(bad).has_value());
  }
  SUBCASE("a directory") {
    std::filesystem::create_directory(bad);
    CHECK(load_identity(bad).error() == make_error_code(errc::key_file_unreadable));
  }
}

TEST_CASE("peer ids differ between keys and are stable for one key") {
  const identity a = identity::generate();
  const identity b = identity::generate();
  CHECK(a.id() != b.id());
  CHECK(peer_id::of(a.public_key_bytes()) == a.id());
  CHECK(identity::from_secret(a.secret_key_bytes()).id() == a.id());
}

}  // namespace
}  // namespace mws::transport
