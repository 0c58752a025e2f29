#include "simulations/network.hpp"

#include <doctest/doctest.h>

namespace mws::sim {
namespace {

TEST_CASE("engine runs events in (time, sequence) order and hashes what it ran") {
  auto trace = [](std::uint64_t salt) {
    engine e;
    std::vector<std::uint64_t> order;
    e.schedule({30, 0, event_kind::tick, 0, 1, salt, 1});
    e.schedule({10, 0, event_kind::tick, 0, 2, 0, 2});
    e.schedule({30, 0, event_kind::tick, 0, 3, 0, 3});
    e.schedule({20, 0, event_kind::tick, 0, 4, 0, 4});
    e.run_until(25, [&](const event& ev) { order.push_back(ev.arg); });
    CHECK(e.now_us() == 25);
    e.run_until(100, [&](const event& ev) {
      order.push_back(ev.arg);
      if (ev.arg == 1) e.schedule({ev.at_us, 0, event_kind::tick, 0, 5, 0, 5});  // same time
    });
    CHECK(order == std::vector<std::uint64_t>{2, 4, 1, 3, 5});
    return e.trace_hash();
  };
  CHECK(trace(0) == trace(0));
  CHECK(trace(0) != trace(1));
}

TEST_CASE("rng output is fixed across platforms") {
  rng r(42);
  // The first outputs of xoshiro256** seeded by splitmix64(42): a change here changes every
  // trace hash, so it must be deliberate.
  const std::uint64_t first = r.next();
  rng again(42);
  CHECK(again.next() == first);
  rng a = rng(7).fork(3), b = rng(7).fork(4);
  CHECK(a.next() != b.next());
  std::uint64_t counts[3] = {0, 0, 0};
  for (int i = 0; i < 30000; ++i)
    ++counts[r.below(3)];
  for (auto c : counts)
    CHECK(c > 9500);
  CHECK(deterministic_exp(0.0) == 1.0);
  CHECK(deterministic_exp(1.0) == doctest::Approx(2.718281828459045).epsilon(1e-15));
  CHECK(deterministic_exp(-20.5) == doctest::Approx(1.2501528663867426e-09).epsilon(1e-14));
}

TEST_CASE("loss and duplication happen at their configured rates") {
  network_spec spec;
  spec.links.loss_p = 0.2;
  spec.links.duplicate_p = 0.1;
  network net(4, spec);
  rng random(5);
  std::vector<sim_time_us> arrivals;
  std::uint64_t delivered = 0;
  const int sends = 20000;
  for (int i = 0; i < sends; ++i) {
    net.send(0, 0, 1, 100, random, arrivals);
    delivered += arrivals.size();
  }
  const auto& c = net.counters();
  CHECK(c.lost > 3700);
  CHECK(c.lost < 4300);
  CHECK(delivered == c.delivered_scheduled);
  CHECK(c.duplicated > 1400);
  CHECK(c.duplicated < 1800);
}

TEST_CASE("bandwidth serialises messages on a link and a full queue drops") {
  network_spec spec;
  spec.links.latency = {latency_kind::constant, 100.0, 0.0};
  spec.links.bandwidth_bytes_per_s = 1e6;  // 1 byte per microsecond
  spec.links.queue_bytes_max = 2500;
  network net(2, spec);
  rng random(1);
  std::vector<sim_time_us> a;
  net.send(0, 0, 1, 1000, random, a);
  REQUIRE(a.size() == 1);
  CHECK(a[0] == 1000 + 100);
  net.send(0, 0, 1, 1000, random, a);  // waits behind the first
  REQUIRE(a.size() == 1);
  CHECK(a[0] == 2000 + 100);
  net.send(0, 0, 1, 1000, random, a);  // backlog 2000 + 1000 > 2500
  CHECK(a.empty());
  CHECK(net.counters().queue_drops == 1);
  net.send(0, 1, 0, 1000, random, a);  // the other direction has its own queue
  REQUIRE(a.size() == 1);
  CHECK(a[0] == 1100);
}

TEST_CASE("partitions cut links until they heal; one-way cuts one direction") {
  network_spec spec;
  spec.partitions.push_back({100, 200, {0, 1}, false});
  spec.partitions.push_back({300, 400, {2}, true});
  network net(4, spec);
  CHECK_FALSE(net.cut(50, 0, 2));
  CHECK(net.cut(100, 0, 2));
  CHECK(net.cut(150, 2, 0));
  CHECK_FALSE(net.cut(150, 0, 1));  // same side
  CHECK_FALSE(net.cut(200, 0, 2));  // healed
  CHECK(net.cut(350, 2, 3));        // from the cut side
  CHECK_FALSE(net.cut(350, 3, 2));  // towards it still flows
  rng random(1);
  std::vector<sim_time_us> a;
  net.send(150, 0, 3, 10, random, a);
  CHECK(a.empty());
  CHECK(net.counters().cut == 1);
  net.set_down(3, true);
  net.send(50, 0, 3, 10, random, a);
  CHECK(a.empty());
  CHECK(net.counters().to_down_node == 1);
}

TEST_CASE("latency distributions stay within their bounds and repeat from the seed") {
  rng r1(9), r2(9);
  const latency_model uni{latency_kind::uniform, 100.0, 300.0};
  const latency_model normal{latency_kind::normal, 1000.0, 100.0};
  const latency_model logn{latency_kind::lognormal, 1000.0, 0.5};
  double sum = 0.0;
  for (int i = 0; i < 10000; ++i) {
    const auto u = uni.sample(r1);
    CHECK(u >= 100);
    CHECK(u <= 300);
    const auto nv = normal.sample(r1);
    CHECK(nv >= 400);
    CHECK(nv <= 1600);
    sum += static_cast<double>(logn.sample(r1));
    CHECK(uni.sample(r2) == u);
    CHECK(normal.sample(r2) == nv);
    logn.sample(r2);
  }
  // The mean of a lognormal with median 1000 and sigma 0.5 is 1000 e^{0.125} = 1133.
  CHECK(sum / 10000 == doctest::Approx(1133.0).epsilon(0.03));
}

TEST_CASE("network validation names the bad field") {
  network_spec spec;
  spec.links.loss_p = -0.1;
  auto r = validate(spec, 4);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("loss") != std::string::npos);
  spec.links.loss_p = 0.0;
  spec.links.latency.a_us = -1.0;
  CHECK_FALSE(validate(spec, 4).has_value());
  spec.links.latency.a_us = 10.0;
  spec.crashes.push_back({7, 0, -1});
  CHECK(validate(spec, 4).error().message.find("crash") != std::string::npos);
  spec.crashes.clear();
  spec.partitions.push_back({200, 100, {0}, false});
  CHECK(validate(spec, 4).error().message.find("partition") != std::string::npos);
  spec.partitions.clear();
  spec.slow.push_back({0, 0.5, 1.0});
  CHECK(validate(spec, 4).error().message.find("slow") != std::string::npos);
}

}  // namespace
}  // namespace mws::sim
