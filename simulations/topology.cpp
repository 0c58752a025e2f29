#include "simulations/topology.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "simulations/detail/assert.hpp"

namespace mws::sim {

graph::graph(node_id n, std::vector<std::pair<node_id, node_id>> edges) : n_(n) {
  std::vector<std::pair<node_id, node_id>> both;
  both.reserve(edges.size() * 2);
  for (auto [a, b] : edges) {
    MWS_SIM_ASSERT(a < n && b < n && a != b);
    both.emplace_back(a, b);
    both.emplace_back(b, a);
  }
  std::sort(both.begin(), both.end());
  both.erase(std::unique(both.begin(), both.end()), both.end());
  offsets_.assign(static_cast<std::size_t>(n) + 1, 0);
  for (auto [a, b] : both)
    ++offsets_[a + 1];
  for (node_id i = 0; i < n; ++i)
    offsets_[i + 1] += offsets_[i];
  adjacency_.reserve(both.size());
  for (auto [a, b] : both)
    adjacency_.push_back(b);
}

std::uint32_t graph::max_degree() const noexcept {
  std::uint32_t d = 0;
  for (node_id i = 0; i < n_; ++i)
    d = std::max(d, degree(i));
  return d;
}

bool graph::has_edge(node_id a, node_id b) const noexcept {
  const auto nb = neighbours(a);
  return std::binary_search(nb.begin(), nb.end(), b);
}

bool graph::connected() const {
  if (n_ == 0) return false;
  std::vector<char> seen(n_, 0);
  std::vector<node_id> stack{0};
  seen[0] = 1;
  node_id count = 1;
  while (!stack.empty()) {
    const node_id v = stack.back();
    stack.pop_back();
    for (node_id u : neighbours(v)) {
      if (!seen[u]) {
        seen[u] = 1;
        ++count;
        stack.push_back(u);
      }
    }
  }
  return count == n_;
}

namespace {

struct kind_name {
  topology_kind kind;
  std::string_view name;
};
constexpr kind_name kind_names[] = {
    {topology_kind::complete, "complete"},
    {topology_kind::ring, "ring"},
    {topology_kind::torus, "torus"},
    {topology_kind::hypercube, "hypercube"},
    {topology_kind::random_regular, "random-regular"},
    {topology_kind::erdos_renyi, "erdos-renyi"},
    {topology_kind::exponential, "exponential"},
    {topology_kind::small_world, "small-world"},
    {topology_kind::edge_list, "edge-list"},
};

using edge_vector = std::vector<std::pair<node_id, node_id>>;
constexpr int attempts_max = 200;

result<graph> random_regular(node_id n, std::uint32_t d, rng& random) {
  if (d < 1 || d >= n) return fail(errc::bad_topology, "random-regular needs 1 <= degree < nodes");
  if ((static_cast<std::uint64_t>(n) * d) % 2 != 0)
    return fail(errc::bad_topology, "random-regular needs nodes x degree even");
  // Pairing model with local rejection (Steger-Wormald): draw two free half-edges; a pair that
  // would make a loop or a parallel edge is redrawn, and only a stuck run starts over.
  for (int attempt = 0; attempt < attempts_max; ++attempt) {
    std::vector<node_id> half_edges;
    half_edges.reserve(static_cast<std::size_t>(n) * d);
    for (node_id i = 0; i < n; ++i)
      for (std::uint32_t k = 0; k < d; ++k)
        half_edges.push_back(i);
    std::vector<std::vector<node_id>> adj(n);
    edge_vector edges;
    bool stuck = false;
    while (!half_edges.empty() && !stuck) {
      stuck = true;
      for (int tries = 0; tries < 100; ++tries) {
        const auto ia = random.below(half_edges.size());
        const auto ib = random.below(half_edges.size());
        const node_id a = half_edges[ia], b = half_edges[ib];
        if (ia == ib || a == b) continue;
        if (std::find(adj[a].begin(), adj[a].end(), b) != adj[a].end()) continue;
        adj[a].push_back(b);
        adj[b].push_back(a);
        edges.emplace_back(a, b);
        const auto hi = std::max(ia, ib), lo = std::min(ia, ib);
        half_edges[hi] = half_edges.back();
        half_edges.pop_back();
        half_edges[lo] = half_edges.back();
        half_edges.pop_back();
        stuck = false;
        break;
      }
    }
    if (stuck) continue;
    graph g(n, std::move(edges));
    if (g.connected()) return g;
  }
  return fail(errc::bad_topology, "could not draw a connected random-regular graph");
}

result<graph> erdos_renyi(node_id n, double p, rng& random) {
  if (!(p > 0.0 && p <= 1.0)) return fail(errc::bad_topology, "erdos-renyi needs 0 < edge_p <= 1");
  if (static_cast<double>(n) * static_cast<double>(n) * p > 5e8)
    return fail(errc::bad_topology, "erdos-renyi graph would have too many edges (> 2.5e8)");
  for (int attempt = 0; attempt < attempts_max; ++attempt) {
    edge_vector edges;
    // Geometric skipping over the n(n-1)/2 pairs would be faster; a plain pass is exact and
    // enough for the sizes where an Erdos-Renyi graph is dense enough to be connected.
    for (node_id a = 0; a < n; ++a)
      for (node_id b = a + 1; b < n; ++b)
        if (random.uniform01() < p) edges.emplace_back(a, b);
    graph g(n, std::move(edges));
    if (g.connected()) return g;
  }
  return fail(errc::bad_topology,
              "erdos-renyi graph is not connected (raise edge_p above ln(n)/n)");
}

result<graph> small_world(node_id n, std::uint32_t d, double beta, rng& random) {
  if (d < 2 || d % 2 != 0 || d >= n)
    return fail(errc::bad_topology, "small-world needs an even degree, 2 <= degree < nodes");
  if (!(beta >= 0.0 && beta <= 1.0))
    return fail(errc::bad_topology, "small-world needs 0 <= rewire_p <= 1");
  for (int attempt = 0; attempt < attempts_max; ++attempt) {
    std::vector<std::vector<node_id>> adj(n);
    auto linked = [&](node_id a, node_id b) {
      return std::find(adj[a].begin(), adj[a].end(), b) != adj[a].end();
    };
    auto link = [&](node_id a, node_id b) {
      adj[a].push_back(b);
      adj[b].push_back(a);
    };
    auto unlink = [&](node_id a, node_id b) {
      adj[a].erase(std::find(adj[a].begin(), adj[a].end(), b));
      adj[b].erase(std::find(adj[b].begin(), adj[b].end(), a));
    };
    for (node_id i = 0; i < n; ++i)
      for (std::uint32_t k = 1; k <= d / 2; ++k)
        link(i, (i + k) % n);
    for (std::uint32_t k = 1; k <= d / 2; ++k) {
      for (node_id i = 0; i < n; ++i) {
        const node_id j = (i + k) % n;
        if (!random.bernoulli(beta) || !linked(i, j)) continue;
        if (adj[i].size() >= n - 1) continue;
        node_id t;
        do {
          t = static_cast<node_id>(random.below(n));
        } while (t == i || linked(i, t));
        unlink(i, j);
        link(i, t);
      }
    }
    edge_vector edges;
    for (node_id i = 0; i < n; ++i)
      for (node_id j : adj[i])
        if (i < j) edges.emplace_back(i, j);
    graph g(n, std::move(edges));
    if (g.connected()) return g;
  }
  return fail(errc::bad_topology, "could not draw a connected small-world graph");
}

}  // namespace

result<topology_kind> parse_topology_kind(std::string_view name) {
  for (const auto& kn : kind_names)
    if (kn.name == name) return kn.kind;
  return fail(errc::unknown_topology,
              "unknown topology '" + std::string(name) + "' (one of: " + topology_names() + ")");
}

std::string_view to_string(topology_kind kind) noexcept {
  for (const auto& kn : kind_names)
    if (kn.kind == kind) return kn.name;
  return "?";
}

std::string topology_names() {
  std::string out;
  for (const auto& kn : kind_names) {
    if (!out.empty()) out += ", ";
    out += kn.name;
  }
  return out;
}

result<graph> make_topology(const topology_spec& spec, rng& random) {
  if (spec.kind == topology_kind::edge_list) {
    auto g = read_edge_list(spec.file);
    if (!g) return g;
    if (g->size() < 2) return fail(errc::too_few_nodes, spec.file + ": fewer than two nodes");
    if (!g->connected()) return fail(errc::bad_topology, spec.file + ": graph is not connected");
    return g;
  }
  const node_id n = spec.nodes;
  if (n < 2) return fail(errc::too_few_nodes, "a mesh needs at least two nodes");
  if (n > (1u << 26)) return fail(errc::bad_scenario, "more than 2^26 nodes");
  edge_vector edges;
  switch (spec.kind) {
    case topology_kind::complete:
      if (n > 20000) return fail(errc::bad_topology, "complete graph of more than 20000 nodes");
      for (node_id a = 0; a < n; ++a)
        for (node_id b = a + 1; b < n; ++b)
          edges.emplace_back(a, b);
      break;
    case topology_kind::ring:
      for (node_id a = 0; a < n; ++a)
        if (n > 2 || a == 0) edges.emplace_back(a, (a + 1) % n);
      break;
    case topology_kind::torus: {
      node_id rows = 1;
      for (node_id r = 1; static_cast<std::uint64_t>(r) * r <= n; ++r)
        if (n % r == 0) rows = r;
      const node_id cols = n / rows;
      if (rows < 3)
        return fail(
            errc::bad_topology,
            "torus needs nodes = rows x cols with rows, cols >= 3 (got " + std::to_string(n) + ")");
      for (node_id r = 0; r < rows; ++r)
        for (node_id c = 0; c < cols; ++c) {
          const node_id i = r * cols + c;
          edges.emplace_back(i, r * cols + (c + 1) % cols);
          edges.emplace_back(i, ((r + 1) % rows) * cols + c);
        }
      break;
    }
    case topology_kind::hypercube:
      if (!std::has_single_bit(n))
        return fail(errc::bad_topology, "hypercube needs a power-of-two node count");
      for (node_id a = 0; a < n; ++a)
        for (node_id bit = 1; bit < n; bit <<= 1)
          if ((a & bit) == 0) edges.emplace_back(a, a | bit);
      break;
    case topology_kind::exponential:
      for (node_id a = 0; a < n; ++a)
        for (std::uint64_t hop = 1; hop < n; hop <<= 1) {
          const auto b = static_cast<node_id>((a + hop) % n);
          if (b != a) edges.emplace_back(a, b);
        }
      break;
    case topology_kind::random_regular:
      return random_regular(n, spec.degree, random);
    case topology_kind::erdos_renyi:
      return erdos_renyi(n, spec.edge_p, random);
    case topology_kind::small_world:
      return small_world(n, spec.degree, spec.rewire_p, random);
    case topology_kind::edge_list:
      break;
  }
  return graph(n, std::move(edges));
}

result<graph> parse_edge_list(std::string_view text, std::string_view source_name) {
  constexpr std::uint64_t nodes_max = 1u << 26;
  constexpr std::size_t edges_max = 1u << 28;
  const std::string src(source_name);
  auto at = [&](std::size_t line, const std::string& what) {
    return fail(errc::bad_edge_list, src + ":" + std::to_string(line) + ": " + what);
  };
  auto parse_id = [](std::string_view tok, std::uint64_t& out) {
    const auto* end = tok.data() + tok.size();
    auto [ptr, ec] = std::from_chars(tok.data(), end, out);
    return ec == std::errc{} && ptr == end;
  };

  edge_vector edges;
  std::uint64_t declared = 0;
  bool have_declared = false;
  std::uint64_t max_id = 0;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    ++line_no;
    auto eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    std::vector<std::string_view> tokens;
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
        ++i;
      if (i > start) tokens.push_back(line.substr(start, i - start));
    }
    if (tokens.empty()) continue;
    if (tokens[0] == "nodes") {
      if (have_declared || !edges.empty())
        return at(line_no, "'nodes N' must be the first entry and appear once");
      if (tokens.size() != 2 || !parse_id(tokens[1], declared))
        return at(line_no, "expected 'nodes N'");
      if (declared < 2 || declared > nodes_max)
        return at(line_no, "node count must be between 2 and 2^26");
      have_declared = true;
      continue;
    }
    if (tokens.size() != 2)
      return at(line_no,
                "expected two node ids 'a b', got " + std::to_string(tokens.size()) + " fields");
    std::uint64_t a = 0, b = 0;
    if (!parse_id(tokens[0], a) || !parse_id(tokens[1], b))
      return at(line_no, "node ids must be non-negative integers");
    const std::uint64_t limit = have_declared ? declared : nodes_max;
    if (a >= limit || b >= limit)
      return at(line_no, "node id " + std::to_string(std::max(a, b)) + " out of range 0.." +
                             std::to_string(limit - 1));
    if (a == b) return at(line_no, "self-loop " + std::to_string(a) + " " + std::to_string(b));
    if (edges.size() >= edges_max) return at(line_no, "more than 2^28 edges");
    max_id = std::max({max_id, a, b});
    edges.emplace_back(static_cast<node_id>(a), static_cast<node_id>(b));
  }
  if (edges.empty()) return fail(errc::bad_edge_list, src + ": no edges");
  const auto n = static_cast<node_id>(have_declared ? declared : max_id + 1);
  return graph(n, std::move(edges));
}

result<graph> read_edge_list(const std::string& path) {
  constexpr std::uintmax_t file_bytes_max = std::uintmax_t{4} << 30;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return fail(errc::unreadable_file, path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::unreadable_file, path + ": cannot open");
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > file_bytes_max)
    return fail(errc::unreadable_file, path + ": larger than 4 GiB");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail(errc::unreadable_file, path + ": read error");
  return parse_edge_list(text.str(), path);
}

}  // namespace mws::sim
