#include "gossip/node.hpp"

#include <doctest/doctest.h>

#include "driver.hpp"
#include "helpers.hpp"

namespace mws::gossip::test {
namespace {

bool none_locked(driver& d) {
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (d.node(i).stats().locked) return false;
  }
  return true;
}

TEST_CASE("pairwise conserves mass under loss, duplication and reordering, and converges") {
  for (std::uint64_t seed : {1u, 2u}) {
    CAPTURE(seed);
    auto backend = gpu::make_cpu_backend();
    const network lossy{
        .loss = 0.2, .duplicate = 0.1, .latency_min_us = 100, .latency_max_us = 1500};
    driver d(*backend, lossy, seed);
    constexpr std::size_t n = 16;
    rng values(seed);
    for (std::size_t i = 0; i < n; ++i) {
      config cfg;
      cfg.algo = algorithm::pairwise;
      cfg.self = {static_cast<std::uint32_t>(i)};
      cfg.peers = hypercube_neighbours(n, i);
      cfg.tick_interval_us = 4000;
      cfg.timeout_us = 3000;
      cfg.seed = seed * 100 + i;
      d.add(cfg, one_tensor(8), [&](model& m) {
        for (auto& v : floats(m.x))
          v = 1.0f + static_cast<float>(values.unit());
      });
    }
    const auto before = total_mass(d);
    const auto exact = ratio(before);
    d.start();
    // Whenever no responder holds a lock, no exchange is half-applied: the mass must be exact
    // (to f32 rounding of the additions). Check it at every such moment.
    double worst_mass = 0.0;
    std::uint64_t checks = 0;
    d.run(4'000'000, {}, [&] {
      if (!none_locked(d)) return;
      ++checks;
      const auto now = total_mass(d);
      for (std::size_t k = 0; k < now.x.size(); ++k) {
        worst_mass = std::max(worst_mass, std::abs(now.x[k] - before.x[k]) / before.x[k]);
      }
      CHECK(now.w == doctest::Approx(before.w).epsilon(1e-12));
    });
    std::uint64_t committed = 0, timed_out = 0, rejected = 0, resent = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& s = d.node(i).stats();
      committed += s.exchanges_committed;
      timed_out += s.exchanges_timed_out;
      rejected += s.exchanges_rejected;
      resent += s.resent;
      CHECK(s.exchanges_abandoned == 0);
    }
    MESSAGE("checks " << checks << ", committed " << committed << ", timed out " << timed_out
                      << ", rejected " << rejected << ", resent " << resent << ", mass error "
                      << worst_mass);
    CHECK(checks > 1000);
    CHECK(timed_out > 10);  // the loss did hit exchanges
    CHECK(resent > 10);     // and lost commits were repaired
    CHECK(worst_mass < 1e-6);
    CHECK(max_relative_error(d, exact) < 1e-5);
  }
}

// One node driven by hand against a recording mock.
struct solo {
  std::unique_ptr<gpu::backend> backend = gpu::make_cpu_backend();
  std::unique_ptr<gpu::stream> stream = backend->make_stream().value();
  std::unique_ptr<averaging_node> node;
  recording_sink out;

  explicit solo(float x0, std::vector<peer_id> peers = {{2}, {3}}) {
    config cfg;
    cfg.algo = algorithm::pairwise;
    cfg.self = {1};
    cfg.peers = std::move(peers);
    cfg.tick_interval_us = 5000;
    cfg.timeout_us = 3000;
    auto m = model::create(*backend, one_tensor(1)).value();
    floats(m.x)[0] = x0;
    node = make_node(cfg, std::move(m), *backend, *stream);
  }
  payload_ptr value(float v) {
    auto s = tensor_set::allocate(*backend, one_tensor(1)).value();
    floats(s)[0] = v;
    return std::make_shared<const tensor_set>(std::move(s));
  }
  float x() const { return floats(node->state().x)[0]; }
  const action& last_send() const {
    for (auto it = out.actions.rbegin(); it != out.actions.rend(); ++it) {
      if (it->what == action::type::send) return *it;
    }
    FAIL("no send");
    return out.actions.front();
  }
};

message propose(std::uint64_t e, payload_ptr x) {
  return {{message_kind::pairwise_propose, e, 0, 0, 0, 1.0}, std::move(x)};
}
message control(message_kind k, std::uint64_t e) {
  return {{k, e, 0, 0, 0, 0.0}, nullptr};
}

TEST_CASE("pairwise responder applies only on commit, and a busy node rejects") {
  solo s(4.0f);
  REQUIRE(!s.node->on_message({2}, propose(7, s.value(2.0f)), 0, s.out));
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_accept);
  CHECK(s.last_send().to == peer_id{2});
  CHECK(s.x() == 4.0f);  // nothing applied before the commit
  CHECK(s.node->stats().locked == 1);
  REQUIRE(!s.node->on_message({3}, propose(1, s.value(0.0f)), 0, s.out));
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_reject);
  CHECK(s.last_send().to == peer_id{3});
  REQUIRE(!s.node->on_message({2}, control(message_kind::pairwise_commit, 7), 0, s.out));
  CHECK(s.x() == 3.0f);
  CHECK(s.node->state().w == 1.0);
  CHECK(s.node->stats().locked == 0);
  // A duplicated commit changes nothing.
  REQUIRE(!s.node->on_message({2}, control(message_kind::pairwise_commit, 7), 0, s.out));
  CHECK(s.x() == 3.0f);
  // A delayed duplicate of the proposal must not start the exchange again.
  s.out.actions.clear();
  REQUIRE(!s.node->on_message({2}, propose(7, s.value(2.0f)), 0, s.out));
  CHECK(s.out.actions.empty());
  CHECK(s.node->stats().locked == 0);
}

TEST_CASE("pairwise responder re-sends its accept until commit or abort, abort applies nothing") {
  solo s(4.0f);
  REQUIRE(!s.node->on_message({2}, propose(7, s.value(2.0f)), 0, s.out));
  s.out.actions.clear();
  s.node->on_tick(3000, s.out);  // timeout: the commit may be lost
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_accept);
  CHECK(s.node->stats().resent == 1);
  REQUIRE(!s.node->on_message({2}, control(message_kind::pairwise_abort, 7), 0, s.out));
  CHECK(s.x() == 4.0f);
  CHECK(s.node->stats().locked == 0);
}

TEST_CASE("pairwise proposer times out, and answers a late accept with abort") {
  solo s(4.0f, {{2}});
  s.node->start(0, s.out);
  s.node->on_tick(0, s.out);
  const auto e = s.last_send().msg.header.seq;
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_propose);
  s.out.actions.clear();
  s.node->on_tick(3000, s.out);  // no answer in time
  CHECK(s.node->stats().exchanges_timed_out == 1);
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_abort);
  CHECK(s.last_send().msg.header.seq == e);
  message late{{message_kind::pairwise_accept, e, 0, 0, 0, 1.0}, s.value(0.0f)};
  REQUIRE(!s.node->on_message({2}, late, 3100, s.out));
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_abort);
  CHECK(s.x() == 4.0f);
}

TEST_CASE("pairwise proposer applies on accept and repeats commit for a repeated accept") {
  solo s(4.0f, {{2}});
  s.node->start(0, s.out);
  s.node->on_tick(0, s.out);
  const auto e = s.last_send().msg.header.seq;
  message accept{{message_kind::pairwise_accept, e, 0, 0, 0, 3.0}, s.value(0.0f)};
  REQUIRE(!s.node->on_message({2}, accept, 500, s.out));
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_commit);
  CHECK(s.x() == 2.0f);
  CHECK(s.node->state().w == 2.0);                        // (1 + 3) / 2
  REQUIRE(!s.node->on_message({2}, accept, 600, s.out));  // our commit was lost
  CHECK(s.last_send().msg.header.kind == message_kind::pairwise_commit);
  CHECK(s.x() == 2.0f);  // applied once
}

TEST_CASE("pairwise local updates during an exchange survive it") {
  solo s(4.0f);
  REQUIRE(!s.node->on_message({2}, propose(7, s.value(2.0f)), 0, s.out));
  auto delta = s.value(10.0f);
  const gpu::const_tensor_view views[] = {(*delta)[0]};
  REQUIRE(!s.node->apply_local_update(views, 0.0, 10));
  REQUIRE(!s.node->on_message({2}, control(message_kind::pairwise_commit, 7), 20, s.out));
  CHECK(s.x() == 13.0f);  // 4 + 10 + (2 - 4) / 2
}

TEST_CASE("pairwise responder whose proposer's link goes down unlocks and counts it") {
  solo s(4.0f);
  REQUIRE(!s.node->on_message({2}, propose(7, s.value(2.0f)), 0, s.out));
  s.node->on_link_down({2}, 10, s.out);
  CHECK(s.node->stats().locked == 0);
  CHECK(s.node->stats().exchanges_abandoned == 1);
  CHECK(s.x() == 4.0f);
}

TEST_CASE("pairwise refuses control messages with tensors and proposals without") {
  solo s(4.0f);
  message bad_control{{message_kind::pairwise_commit, 1, 0, 0, 0, 0.0}, s.value(1.0f)};
  CHECK(s.node->on_message({2}, bad_control, 0, s.out) == errc::wrong_tensor_count);
  message empty{{message_kind::pairwise_propose, 1, 0, 0, 0, 1.0}, nullptr};
  CHECK(s.node->on_message({2}, empty, 0, s.out) == errc::wrong_tensor_count);
  message inf{{message_kind::pairwise_propose, 1, 0, 0, 0, 1.0 / 0.0}, s.value(1.0f)};
  CHECK(s.node->on_message({2}, inf, 0, s.out) == errc::bad_weight);
  CHECK(s.node->on_message({2}, propose(1, s.value(1.0f)), 0, s.out) == error_code{});
}

}  // namespace
}  // namespace mws::gossip::test
