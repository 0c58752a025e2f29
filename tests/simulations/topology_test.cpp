#include "simulations/topology.hpp"

#include <cstdio>
#include <fstream>

#include <doctest/doctest.h>

namespace mws::sim {
namespace {

graph build(topology_kind kind, node_id n, std::uint64_t seed = 1) {
  rng random(seed);
  topology_spec spec;
  spec.kind = kind;
  spec.nodes = n;
  auto g = make_topology(spec, random);
  INFO("seed ", seed, " kind ", to_string(kind));
  REQUIRE(g.has_value());
  return *g;
}

TEST_CASE("structured topologies have their textbook degrees and are connected") {
  const graph ring = build(topology_kind::ring, 64);
  CHECK(ring.edge_count() == 64);
  CHECK(ring.max_degree() == 2);
  const graph torus = build(topology_kind::torus, 64);
  CHECK(torus.edge_count() == 128);
  CHECK(torus.max_degree() == 4);
  const graph cube = build(topology_kind::hypercube, 64);
  CHECK(cube.edge_count() == 64 * 6 / 2);
  const graph complete = build(topology_kind::complete, 10);
  CHECK(complete.edge_count() == 45);
  const graph expo = build(topology_kind::exponential, 64);
  // i ~ i +- 1, 2, 4, ..., 32: 2*6 - 1 distinct neighbours (32 and -32 coincide).
  CHECK(expo.max_degree() == 11);
  for (node_id i = 0; i < 64; ++i)
    CHECK(expo.degree(i) == 11);
  for (const graph* g : {&ring, &torus, &cube, &complete, &expo})
    CHECK(g->connected());
}

TEST_CASE("random topologies are connected, simple and repeat from their seed") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    INFO("seed ", seed);
    const graph rr = build(topology_kind::random_regular, 64, seed);
    for (node_id i = 0; i < 64; ++i)
      CHECK(rr.degree(i) == 4);
    CHECK(rr.connected());
    const graph sw = build(topology_kind::small_world, 64, seed);
    CHECK(sw.edge_count() == 128);  // rewiring keeps the edge count
    CHECK(sw.connected());
    const graph er = build(topology_kind::erdos_renyi, 64, seed);
    CHECK(er.connected());
    const graph again = build(topology_kind::random_regular, 64, seed);
    for (node_id i = 0; i < 64; ++i) {
      const auto a = rr.neighbours(i), b = again.neighbours(i);
      CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
  }
}

TEST_CASE("impossible topologies fail with a clear error instead of a graph") {
  rng random(7);
  topology_spec spec;
  spec.nodes = 1;
  CHECK(make_topology(spec, random).error().code == errc::too_few_nodes);
  spec.nodes = 48;
  spec.kind = topology_kind::hypercube;
  CHECK(make_topology(spec, random).error().code == errc::bad_topology);
  spec.kind = topology_kind::torus;
  spec.nodes = 31;  // prime
  CHECK(make_topology(spec, random).error().code == errc::bad_topology);
  spec.kind = topology_kind::random_regular;
  spec.nodes = 9;
  spec.degree = 3;  // nodes x degree odd: no regular graph exists
  CHECK(make_topology(spec, random).error().code == errc::bad_topology);
  spec.kind = topology_kind::erdos_renyi;
  spec.nodes = 200;
  spec.edge_p = 0.001;
  CHECK(make_topology(spec, random).error().code == errc::bad_topology);
  CHECK(parse_topology_kind("moebius").error().code == errc::unknown_topology);
  CHECK(parse_topology_kind("moebius").error().message.find("ring") != std::string::npos);
}

TEST_CASE("edge-list parser accepts comments and a node count") {
  auto g =
      parse_edge_list("# a triangle and a tail\nnodes 4\n0 1\n1 2 # inline\n\n2 0\n2 3\n", "t.txt");
  REQUIRE(g.has_value());
  CHECK(g->size() == 4);
  CHECK(g->edge_count() == 4);
  CHECK(g->has_edge(3, 2));
}

TEST_CASE("edge-list parser names the offending line") {
  struct bad_case {
    const char* text;
    const char* expect;
  };
  const bad_case cases[] = {
      {"0 1\n1 x\n", "t.txt:2: node ids must be non-negative integers"},
      {"0 1\n1 2 3\n", "t.txt:2: expected two node ids"},
      {"nodes 3\n0 1\n1 5\n", "t.txt:3: node id 5 out of range 0..2"},
      {"0 1\n2 2\n", "t.txt:2: self-loop"},
      {"0 1\nnodes 4\n", "t.txt:2: 'nodes N' must be the first"},
      {"nodes 1\n", "t.txt:1: node count must be between"},
      {"-1 2\n", "t.txt:1: node ids must be non-negative"},
      {"99999999999999999999 1\n", "t.txt:1: node ids must be"},
      {"# nothing\n", "t.txt: no edges"},
      {"", "t.txt: no edges"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto g = parse_edge_list(c.text, "t.txt");
    REQUIRE_FALSE(g.has_value());
    CHECK(g.error().code == errc::bad_edge_list);
    CHECK(g.error().message.rfind(c.expect, 0) == 0);
  }
}

TEST_CASE("edge-list files that cannot be read or do not connect are refused") {
  rng random(1);
  topology_spec spec;
  spec.kind = topology_kind::edge_list;
  for (const std::string unreadable : {"/nonexistent/mws-edges.txt", "/"}) {
    INFO(unreadable);
    spec.file = unreadable;
    CHECK(make_topology(spec, random).error().code == errc::unreadable_file);
  }
  const std::string path = "mws_sim_test_edges.txt";
  {
    std::ofstream out(path);
    out << "0 1\n2 3\n";
  }
  spec.file = path;
  auto g = make_topology(spec, random);
  std::remove(path.c_str());
  REQUIRE_FALSE(g.has_value());
  CHECK(g.error().code == errc::bad_topology);
  CHECK(g.error().message.find("not connected") != std::string::npos);
}

}  // namespace
}  // namespace mws::sim
