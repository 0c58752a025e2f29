// Push-sum's streamed receipt (averaging_node::begin_share): a share mixed part by part as its
// bytes arrive, as the runtime does for model-sized shares.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "driver.hpp"
#include "gossip/node.hpp"
#include "helpers.hpp"

namespace mws::gossip::test {
namespace {

// Two f32 tensors of 4 and 3 elements.
manifest two_tensors() {
  return {{"a", gpu::dtype::f32, 4}, {"b", gpu::dtype::f32, 3}};
}

// A holding push-sum node (self 1, one peer 2) whose x is `values` times w.
struct holder {
  std::unique_ptr<gpu::backend> backend = gpu::make_cpu_backend();
  std::unique_ptr<gpu::stream> stream = backend->make_stream().value();
  std::unique_ptr<averaging_node> node;
  recording_sink out;

  holder(const std::vector<float>& values, double w, bool hold = true) {
    config cfg;
    cfg.self = {1};
    cfg.peers = {{2}};
    cfg.hold_unacked = hold;
    cfg.tick_interval_us = 1000;
    auto m = model::create(*backend, two_tensors(), w).value();
    fill(m.x, values, w);
    node = make_node(cfg, std::move(m), *backend, *stream);
  }
  // A set of this manifest holding `values` times `scale`.
  payload_ptr share(const std::vector<float>& values, double scale) {
    auto s = tensor_set::allocate(*backend, two_tensors()).value();
    fill(s, values, scale);
    return std::make_shared<const tensor_set>(std::move(s));
  }
  static void fill(tensor_set& s, const std::vector<float>& values, double scale) {
    for (std::size_t k = 0; k < values.size(); ++k) {
      const std::size_t t = k < 4 ? 0 : 1;
      floats(s, t)[k < 4 ? k : k - 4] = static_cast<float>(static_cast<double>(values[k]) * scale);
    }
  }
  // x / w, element by element, with the weight receiving() gives each.
  std::vector<double> estimate() const {
    const auto& st = node->state();
    const auto at = node->receiving();
    std::vector<double> e;
    for (std::size_t t = 0; t < 2; ++t) {
      for (std::size_t k = 0; k < st.x[t].numel; ++k)
        e.push_back(static_cast<double>(floats(st.x, t)[k]) / at.of(st.w, t, k));
    }
    return e;
  }
  bool acked(std::uint64_t seq) const {
    return !out.actions.empty() &&
           out.actions.back().msg.header.kind == message_kind::push_sum_ack &&
           out.actions.back().msg.header.seq == seq;
  }
};

const std::vector<float> v{1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f};
const std::vector<float> u{8.0f, 16.0f, 24.0f, 32.0f, 40.0f, 48.0f, 56.0f};

message running(std::uint64_t seq, double weight, payload_ptr p) {
  message m;
  m.header.kind = message_kind::push_sum_running;
  m.header.seq = seq;
  m.header.weight = weight;
  m.tensors = std::move(p);
  return m;
}

void check_near(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    CAPTURE(k);
    CHECK(got[k] == doctest::Approx(want[k]).epsilon(1e-6));
  }
}

TEST_CASE("a streamed share mixes to the same bits as the same share whole") {
  holder whole(v, 2.0), streamed(v, 2.0);
  const auto m = running(1, 0.5, whole.share(u, 0.5));
  REQUIRE(!whole.node->on_message({2}, m, 0, whole.out));
  REQUIRE(streamed.node->begin_share({2}, m.header, 0, streamed.out).value());
  REQUIRE(!streamed.node->share_part((*m.tensors)[0].slice(0, 3)));
  const auto at = streamed.node->receiving();
  CHECK(at.weight == 0.5);
  CHECK(at.tensor == 0);
  CHECK(at.element == 3);
  REQUIRE(!streamed.node->share_part((*m.tensors)[0].slice(3, 1)));
  REQUIRE(!streamed.node->share_part((*m.tensors)[1]));
  CHECK(streamed.out.actions.empty());  // acked at the end only
  REQUIRE(!streamed.node->end_share(0, streamed.out));
  for (std::size_t t = 0; t < 2; ++t) {
    const auto a = floats(whole.node->state().x, t), b = floats(streamed.node->state().x, t);
    CHECK(std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
  }
  CHECK(streamed.node->state().w == whole.node->state().w);
  CHECK(streamed.node->receiving().weight == 0.0);
  CHECK(streamed.acked(1));
  CHECK(streamed.node->stats().received == 1);
}

TEST_CASE("a streamed share cut short is completed from the node's own estimate") {
  holder n(v, 2.0);
  const auto m = running(1, 0.5, n.share(u, 0.5));
  REQUIRE(n.node->begin_share({2}, m.header, 0, n.out).value());
  REQUIRE(!n.node->share_part((*m.tensors)[0].slice(0, 3)));
  // Mid-share, the estimate already weighs the mixed elements by w + 0.5.
  std::vector<double> mixed;
  for (std::size_t k = 0; k < v.size(); ++k) {
    const double vk = v[k], uk = u[k];
    mixed.push_back(k < 3 ? (2.0 * vk + 0.5 * uk) / 2.5 : vk);
  }
  check_near(n.estimate(), mixed);
  REQUIRE(!n.node->abort_share());
  // The three elements that came carry the share; the others keep their estimate.
  check_near(n.estimate(), mixed);
  CHECK(n.node->state().w == 2.5);
  CHECK(n.node->stats().shares_cut == 1);
  CHECK(n.out.actions.empty());  // nothing acked
  // The share counts as applied: its re-send is ignored, and acked.
  REQUIRE(!n.node->on_message({2}, m, 10, n.out));
  CHECK(n.node->stats().ignored == 1);
  CHECK(n.acked(1));
  check_near(n.estimate(), mixed);
}

TEST_CASE("a node sending while a share streams in takes its part from both weights") {
  holder n(v, 1.0);
  n.node->start(0, n.out);
  // A share of the same estimate: whatever the node sends, and keeps, must estimate v.
  const auto m = running(1, 1.0, n.share(v, 1.0));
  REQUIRE(n.node->begin_share({2}, m.header, 0, n.out).value());
  REQUIRE(!n.node->share_part((*m.tensors)[0].slice(0, 2)));
  n.out.actions.clear();
  n.node->on_tick(0, n.out);  // a running sum to peer 2: half of w = 1
  REQUIRE(!n.out.actions.empty());
  const auto& sent = n.out.actions.front().msg;
  REQUIRE(sent.header.kind == message_kind::push_sum_running);
  CHECK(sent.header.weight == 0.5);
  std::vector<double> sent_estimate;
  for (std::size_t t = 0; t < 2; ++t) {
    for (float x : floats(*sent.tensors, t))
      sent_estimate.push_back(static_cast<double>(x) / sent.header.weight);
  }
  const std::vector<double> want(v.begin(), v.end());
  check_near(sent_estimate, want);
  check_near(n.estimate(), want);
  REQUIRE(!n.node->share_part((*m.tensors)[0].slice(2, 2)));
  REQUIRE(!n.node->share_part((*m.tensors)[1]));
  REQUIRE(!n.node->end_share(0, n.out));
  check_near(n.estimate(), want);
  CHECK(n.node->state().w == 1.5);
}

TEST_CASE("streamed shares out of turn or off the manifest are refused") {
  holder n(v, 1.0);
  const auto m = running(1, 0.5, n.share(u, 0.5));
  CHECK(n.node->share_part((*m.tensors)[0]) == errc::out_of_turn);
  CHECK(n.node->end_share(0, n.out) == errc::out_of_turn);
  CHECK(n.node->abort_share() == errc::out_of_turn);
  CHECK(n.node->begin_share({9}, m.header, 0, n.out).error() == errc::not_a_peer);
  auto bad = m.header;
  bad.weight = std::nan("");
  CHECK(n.node->begin_share({2}, bad, 0, n.out).error() == errc::bad_weight);
  bad.weight = 1e39;  // completing a cut share would overflow f32
  CHECK(n.node->begin_share({2}, bad, 0, n.out).error() == errc::bad_weight);
  bad = m.header;
  bad.kind = message_kind::sync_value;
  CHECK(n.node->begin_share({2}, bad, 0, n.out).error() == errc::wrong_algorithm);
  REQUIRE(n.node->begin_share({2}, m.header, 0, n.out).value());
  CHECK(n.node->begin_share({2}, m.header, 0, n.out).error() == errc::out_of_turn);
  // A copy of the open share, whole, is a repeat: nothing mixed.
  const auto before = n.estimate();
  REQUIRE(!n.node->on_message({2}, m, 0, n.out));
  CHECK(n.node->stats().ignored == 1);
  // A newer one from the same peer waits for the open one's end (its sender re-sends it).
  auto newer = m;
  newer.header.seq = 2;
  newer.header.round = 1;
  CHECK(n.node->on_message({2}, newer, 0, n.out) == errc::out_of_turn);
  check_near(n.estimate(), before);
  const float five[5] = {};
  CHECK(n.node->share_part({five, 5, gpu::dtype::f32, gpu::memory_space::host}) ==
        errc::wrong_numel);  // tensor a has 4
  const std::uint16_t halves[4] = {};
  CHECK(n.node->share_part({halves, 4, gpu::dtype::f16, gpu::memory_space::host}) ==
        errc::wrong_dtype);
  CHECK(n.node->share_part((*m.tensors)[0].slice(0, 0)) == errc::wrong_numel);
  REQUIRE(!n.node->share_part((*m.tensors)[0]));
  CHECK(n.node->end_share(0, n.out) == errc::out_of_turn);  // tensor b still to come
  REQUIRE(!n.node->share_part((*m.tensors)[1]));
  CHECK(n.node->share_part((*m.tensors)[1]) == errc::out_of_turn);  // nothing left
  REQUIRE(!n.node->end_share(0, n.out));
  CHECK(n.node->stats().refused == 6);  // the refused begins and the newer one
  // Only a holding node streams.
  holder plain(v, 1.0, false);
  CHECK(plain.node->begin_share({2}, m.header, 0, plain.out).error() == errc::not_supported);
}

// 16 holding push-sum nodes on a hypercube, shares streamed in and a fraction of them cut.
struct stream_run {
  std::vector<double> low, high;  // per element: the least and largest initial value
  std::vector<double> mean;       // per element: the mean of the initial values
  std::vector<double> first;      // node 0's final estimate
  double spread = 0.0;            // largest relative difference of any node's from node 0's
  double weight = 0.0;            // sum of w at the end
  std::uint64_t cut = 0;
};

stream_run run_streamed(double cut, bool same_values) {
  auto backend = gpu::make_cpu_backend();
  driver d(*backend,
           network{.latency_min_us = 100, .latency_max_us = 900, .stream = true, .cut = cut}, 7);
  constexpr std::size_t n = 16;
  rng values(11);
  stream_run r;
  r.low.assign(7, 1e9);
  r.high.assign(7, -1e9);
  r.mean.assign(7, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    config cfg;
    cfg.algo = algorithm::push_sum;
    cfg.self = {static_cast<std::uint32_t>(i)};
    cfg.peers = hypercube_neighbours(n, i);
    cfg.hold_unacked = true;
    cfg.tick_interval_us = 1000;
    cfg.timeout_us = 3000;
    cfg.seed = 100 + i;
    d.add(cfg, two_tensors(), [&](model& m) {
      std::vector<float> x(7);
      for (std::size_t k = 0; k < 7; ++k) {
        x[k] = same_values ? v[k] : 1.0f + static_cast<float>(values.unit());
        r.low[k] = std::min(r.low[k], static_cast<double>(x[k]));
        r.high[k] = std::max(r.high[k], static_cast<double>(x[k]));
        r.mean[k] += static_cast<double>(x[k]) / n;
      }
      holder::fill(m.x, x, 1.0);
    });
  }
  d.start();
  d.run(300'000);
  d.net() = network{.stream = true};  // 100 us latency: 500 us after a tick, nothing in flight
  d.run(400'500);
  const auto estimate = [&](std::size_t i) {
    std::vector<double> e;
    const auto& st = d.node(i).state();
    for (std::size_t t = 0; t < 2; ++t) {
      for (float x : floats(st.x, t))
        e.push_back(static_cast<double>(x) / st.w);
    }
    return e;
  };
  r.first = estimate(0);
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(d.node(i).receiving().weight == 0.0);
    const auto e = estimate(i);
    for (std::size_t k = 0; k < e.size(); ++k)
      r.spread = std::max(r.spread, std::abs(e[k] - r.first[k]) / std::abs(r.first[k]));
    r.weight += d.node(i).state().w;
  }
  r.cut = d.streams_cut;
  return r;
}

TEST_CASE("push-sum with streamed shares, a fifth of them cut, agrees on a weighted mean") {
  SUBCASE("equal initial values stay exactly what they were") {
    const auto r = run_streamed(0.2, true);
    CHECK(r.cut > 100);
    check_near(r.first, {v.begin(), v.end()});
    CHECK(r.spread < 1e-6);
    // A cut share's weight is kept by its receiver: none is lost.
    CHECK(r.weight == doctest::Approx(16.0).epsilon(1e-12));
  }
  SUBCASE("distinct initial values end on one value between the least and the largest") {
    const auto r = run_streamed(0.2, false);
    CHECK(r.cut > 100);
    CHECK(r.spread < 1e-5);
    for (std::size_t k = 0; k < r.first.size(); ++k) {
      CHECK(r.first[k] > r.low[k]);
      CHECK(r.first[k] < r.high[k]);
    }
  }
  SUBCASE("with no cut, the exact mean") {
    const auto exact = run_streamed(0.0, false);
    CHECK(exact.cut == 0);
    check_near(exact.first, exact.mean);
    CHECK(exact.spread < 1e-6);
    CHECK(exact.weight == doctest::Approx(16.0).epsilon(1e-12));
  }
}

}  // namespace
}  // namespace mws::gossip::test
