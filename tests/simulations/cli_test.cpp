#include "apps/mws-sim/scenario_file.hpp"

#include <doctest/doctest.h>

namespace mws::sim::cli {
namespace {

TEST_CASE("the example TOML parses and sets what it says") {
  auto s = parse_scenario_toml(example_toml(), "example.toml", scenario{});
  REQUIRE(s.has_value());
  CHECK(s->topology.kind == topology_kind::torus);
  CHECK(s->topology.nodes == 64);
  CHECK(s->algo == gossip::algorithm::sync);
  CHECK(s->params == 256);
  CHECK(s->network.links.latency.kind == latency_kind::uniform);
  CHECK(s->network.links.latency.b_us == 1500.0);
  CHECK(s->device == gpu::backend_choice::automatic);
  auto on_cpu = parse_scenario_toml("mode = \"batched\"\ndevice = \"cpu\"\n", "d.toml", scenario{});
  REQUIRE(on_cpu.has_value());
  CHECK(on_cpu->device == gpu::backend_choice::cpu);
}

TEST_CASE("TOML fault tables become partitions, crashes and slow nodes") {
  auto s = parse_scenario_toml(R"(
[network]
loss = 0.1
[[network.partition]]
start_us = 10
heal_us = 20
nodes = [1, 2]
one_way = true
[[network.crash]]
node = 3
at_us = 5
[[network.slow]]
node = 4
tick_factor = 2.5
)",
                               "f.toml", scenario{});
  REQUIRE(s.has_value());
  REQUIRE(s->network.partitions.size() == 1);
  CHECK(s->network.partitions[0].one_way);
  CHECK(s->network.partitions[0].side == std::vector<node_id>{1, 2});
  REQUIRE(s->network.crashes.size() == 1);
  CHECK(s->network.crashes[0].restart_us == -1);
  REQUIRE(s->network.slow.size() == 1);
  CHECK(s->network.slow[0].tick_factor == 2.5);
  CHECK(s->network.links.loss_p == 0.1);
}

TEST_CASE("bad TOML scenarios fail with the file, the line and the reason") {
  struct bad_case {
    const char* text;
    const char* expect;
  };
  const bad_case cases[] = {
      {"steps = \n", "s.toml:1: "},
      {"[topology]\nkind = \"moebius\"\n", "s.toml:2: topology.kind unknown topology 'moebius'"},
      {"[topology]\nnodez = 5\n", "s.toml:2: unknown key 'nodez' in topology"},
      {"[topology]\nnodes = \"many\"\n", "s.toml:2: topology.nodes must be an integer"},
      {"[network]\nloss = -0.2\n", "s.toml:2: network.loss must be between 0 and 1"},
      {"[network]\nloss = 2\n", "s.toml:2: network.loss must be between 0 and 1"},
      {"steps = 0\n", "s.toml:1: scenario.steps must be between 1"},
      {"topology = 3\n", "s.toml: 'topology' must be a table"},
      {"[algorithm]\nname = \"raft\"\n", "s.toml:2: algorithm.name unknown algorithm 'raft'"},
      {"[network]\npartition = 3\n", "s.toml: network.partition must be an array of tables"},
      {"[[network.crash]]\nnode = -1\nat_us = 0\n", "s.toml:2: network.crash.node must be between"},
      {"[time]\ntick_us = 0\n", "s.toml:2: time.tick_us must be between 1"},
      {"[model]\nparams = 1.5\n", "s.toml:2: model.params must be an integer"},
      {"mode = \"quantum\"\n", "s.toml:1: scenario.mode unknown mode 'quantum'"},
      {"device = \"tpu\"\n", "s.toml:1: scenario.device unknown device 'tpu' (auto, cpu, cuda)"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto s = parse_scenario_toml(c.text, "s.toml", scenario{});
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == errc::bad_toml);
    CHECK(s.error().message.rfind(c.expect, 0) == 0);
    CAPTURE(s.error().message);
  }
}

TEST_CASE("scenario files that cannot be read are refused") {
  CHECK(load_scenario_toml("/nonexistent/s.toml", scenario{}).error().code ==
        errc::unreadable_file);
  CHECK(load_scenario_toml("/", scenario{}).error().code == errc::unreadable_file);
}

TEST_CASE("fault flags parse their compact form and refuse anything else") {
  auto p = parse_partition_flag("100:200:1,2,3:one-way");
  REQUIRE(p.has_value());
  CHECK(p->start_us == 100);
  CHECK(p->heal_us == 200);
  CHECK(p->side.size() == 3);
  CHECK(p->one_way);
  CHECK(parse_partition_flag("100:200:1,2").has_value());
  for (const char* bad :
       {"100:200", "a:200:1", "100:200:1,,2", "100:200:1:two-way", "", "1:2:3:4:5"})
    CHECK_FALSE(parse_partition_flag(bad).has_value());
  auto c = parse_crash_flag("4:1000:5000");
  REQUIRE(c.has_value());
  CHECK(c->restart_us == 5000);
  CHECK_FALSE(parse_crash_flag("4").has_value());
  CHECK_FALSE(parse_crash_flag("x:1").has_value());
  auto s = parse_slow_flag("7:2.5:1.5");
  REQUIRE(s.has_value());
  CHECK(s->tick_factor == 2.5);
  CHECK_FALSE(parse_slow_flag("7:fast").has_value());
  CHECK_FALSE(parse_slow_flag("7:2x").has_value());
}

}  // namespace
}  // namespace mws::sim::cli
