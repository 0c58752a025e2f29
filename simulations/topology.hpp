// Communication graphs for simulated meshes: undirected, simple (no self-loops, no parallel
// edges), connected. Stored as compressed adjacency lists with each list sorted, so every
// iteration over neighbours is in a fixed order and runs are reproducible.
//
// Random generators draw from the rng they are given; a generator that produces a disconnected
// graph retries with the same rng a bounded number of times, then fails.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "simulations/error.hpp"
#include "simulations/rng.hpp"

namespace mws::sim {

using node_id = std::uint32_t;

class graph {
 public:
  graph() = default;
  // Builds from an edge list; duplicates and both directions of an edge collapse to one edge.
  // Preconditions: every endpoint < n, no self-loops.
  graph(node_id n, std::vector<std::pair<node_id, node_id>> edges);

  node_id size() const noexcept { return n_; }
  std::span<const node_id> neighbours(node_id i) const noexcept {
    return {adjacency_.data() + offsets_[i], adjacency_.data() + offsets_[i + 1]};
  }
  std::uint32_t degree(node_id i) const noexcept { return offsets_[i + 1] - offsets_[i]; }
  std::size_t edge_count() const noexcept { return adjacency_.size() / 2; }
  std::uint32_t max_degree() const noexcept;
  bool connected() const;
  bool has_edge(node_id a, node_id b) const noexcept;

 private:
  node_id n_ = 0;
  std::vector<std::uint32_t> offsets_{0};
  std::vector<node_id> adjacency_;
};

enum class topology_kind {
  complete,
  ring,
  torus,      // 2-D torus rows x cols, rows the largest divisor of n <= sqrt(n), both >= 3
  hypercube,  // n a power of two
  random_regular,
  erdos_renyi,
  exponential,  // i ~ i +- 2^k (mod n): the undirected static exponential graph
  small_world,  // Watts-Strogatz: ring lattice of `degree`, each edge rewired with `rewire_p`
  edge_list,    // read from `file`
};

struct topology_spec {
  topology_kind kind = topology_kind::ring;
  node_id nodes = 64;
  std::uint32_t degree = 4;  // random_regular, small_world
  double edge_p = 0.1;       // erdos_renyi
  double rewire_p = 0.1;     // small_world
  std::string file;          // edge_list
};

result<topology_kind> parse_topology_kind(std::string_view name);
std::string_view to_string(topology_kind kind) noexcept;
// All names parse_topology_kind accepts, comma-separated, for help texts and errors.
std::string topology_names();

result<graph> make_topology(const topology_spec& spec, rng& random);

// Edge-list text: one edge "a b" per line (0-based node ids), '#' starts a comment, blank lines
// are ignored; an optional first line "nodes N" fixes the node count (else max id + 1).
// Errors name the line: "<source>:<line>: <what>".
result<graph> parse_edge_list(std::string_view text, std::string_view source_name);
result<graph> read_edge_list(const std::string& path);

}  // namespace mws::sim
