// What mws-node reads and writes besides the model: the mesh pre-shared key file, the allowlist
// file, and the random-init model description. Each failure is one sentence for the operator.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/model_file.hpp"
#include "runtime/node.hpp"
#include "transport/identity.hpp"

namespace mws::node_app {

using psk = std::array<std::uint8_t, 32>;

// A PSK file holds 64 hex digits (and optional surrounding whitespace); group and others must
// have no access to it (mode 0600 or stricter).
runtime::node_result<psk> load_psk_file(const std::filesystem::path& path);
// Creates a PSK file with a fresh random key (mode 0600); never replaces an existing file.
runtime::node_result<void> create_psk_file(const std::filesystem::path& path);

// An allowlist file holds one public key per line (64 hex digits); '#' starts a comment.
runtime::node_result<std::vector<transport::public_key>> load_allowlist_file(
    const std::filesystem::path& path);

std::string to_hex(std::span<const std::uint8_t> bytes);

// "N" (one f32 tensor "weights" of N elements) or "name:AxBxC[:dtype],..." (dtype f32, f16 or
// bf16; default f32), filled with uniform values in [-1, 1) from `seed`.
runtime::node_result<runtime::model_file> random_model(const std::string& spec, std::uint64_t seed);

}  // namespace mws::node_app
