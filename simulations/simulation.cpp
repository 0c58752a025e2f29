#include "simulations/simulation.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "gossip/codec.hpp"
#include "simulations/detail/assert.hpp"
#include "simulations/detail/workload.hpp"

namespace mws::sim {

namespace {

const float* host_floats(gpu::const_tensor_view v) {
  return static_cast<const float*>(v.data);
}

double wall_seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Streams that keep the draws of one part of a run independent of the others.
enum : std::uint64_t {
  stream_topology = 1,
  stream_network = 2,
  stream_workload = 3,
  stream_node = 4
};

}  // namespace

class event_simulation::sink final : public gossip::action_sink {
 public:
  sink(event_simulation& sim, node_id self) : sim_(sim), self_(self) {}
  void send(gossip::peer_id to, gossip::message msg) override {
    sim_.on_send(self_, to, std::move(msg));
  }
  void arm_timer(gossip::time_us at_us) override { sim_.on_timer(self_, at_us); }

 private:
  event_simulation& sim_;
  node_id self_;
};

result<std::unique_ptr<event_simulation>> event_simulation::create(const scenario& s) {
  rng root(s.seed);
  rng topo_rng = root.fork(stream_topology);
  auto g = make_topology(s.topology, topo_rng);
  if (!g) return g.error();
  if (auto ok = validate(s, g->size()); !ok) return ok.error();
  if (s.mode != sim_mode::event)
    return fail(errc::unsupported, "event_simulation runs the event mode only");
  if (s.workload.kind == workload_kind::sgd &&
      static_cast<double>(g->size()) * s.workload.samples_per_node * static_cast<double>(s.params) >
          2e8)
    return fail(errc::bad_scenario, "sgd data (nodes x samples x params) above 2e8 values");
  return std::unique_ptr<event_simulation>(new event_simulation(s, std::move(*g)));
}

event_simulation::event_simulation(const scenario& s, graph g)
    : scenario_(s),
      graph_(std::move(g)),
      backend_(gpu::make_cpu_backend()),
      net_(graph_.size(), s.network),
      net_rng_(rng(s.seed).fork(stream_network)) {
  const node_id n = graph_.size();
  auto st = backend_->make_stream();
  MWS_SIM_ASSERT(st.has_value());
  stream_ = std::move(*st);
  manifest_ = {gossip::tensor_spec{"params", gpu::dtype::f32, scenario_.params}};
  workload_ = std::make_unique<detail::workload>(scenario_.workload, n, scenario_.params,
                                                 rng(s.seed).fork(stream_workload));
  step_us_ = effective_step_us(scenario_);
  injected_x_.assign(scenario_.params, 0.0);
  peers_.resize(n);
  for (node_id i = 0; i < n; ++i) {
    if (scenario_.algo == gossip::algorithm::exact) {
      for (node_id j = 0; j < n; ++j)
        peers_[i].push_back({j});
    } else {
      for (node_id j : graph_.neighbours(i))
        peers_[i].push_back({j});
    }
  }
  const rng node_root = rng(s.seed).fork(stream_node);
  nodes_.reserve(n);
  for (node_id i = 0; i < n; ++i) {
    auto m = gossip::model::create(*backend_, manifest_, 1.0);
    MWS_SIM_ASSERT(m.has_value());
    auto view = m->x.mutable_view(0);
    std::span<float> x(static_cast<float*>(view.data), scenario_.params);
    workload_->initial(i, x);
    for (std::size_t k = 0; k < scenario_.params; ++k)
      injected_x_[k] += static_cast<double>(x[k]);
    injected_w_ += 1.0;
    gossip::config cfg;
    cfg.algo = scenario_.algo;
    cfg.self = {i};
    cfg.peers = peers_[i];
    cfg.start_us = 0;
    cfg.tick_interval_us = scenario_.tick_us;
    cfg.timeout_us = scenario_.timeout_us;
    cfg.fanout = scenario_.fanout;
    cfg.running_sums = scenario_.running_sums;
    cfg.staleness = scenario_.staleness;
    cfg.exact_epochs = scenario_.exact_epochs;
    cfg.seed = node_root.fork(i).next();
    nodes_.push_back(gossip::make_node(cfg, std::move(*m), *backend_, *stream_));
  }
  last_timer_.assign(n, -1);
  auto d = backend_->allocate(gpu::dtype::f32, scenario_.params, gpu::memory_space::device);
  MWS_SIM_ASSERT(d.has_value());
  delta_ = std::move(*d);

  if (scenario_.algo == gossip::algorithm::sync || scenario_.mode == sim_mode::batched) {
    if (n <= 4096) predicted_ = mixing_spectrum(metropolis_hastings(graph_)).slem;
  }
  for (const auto& c : scenario_.network.crashes) {
    engine_.schedule({c.at_us, 0, event_kind::crash, c.node, c.node, 0, 0});
    if (c.restart_us >= 0)
      engine_.schedule({c.restart_us, 0, event_kind::restart, c.node, c.node, 0, 0});
  }
  for (std::size_t k = 0; k < scenario_.network.partitions.size(); ++k) {
    const auto& p = scenario_.network.partitions[k];
    engine_.schedule({p.start_us, 0, event_kind::link_down, 0, 0, 0, k});
    engine_.schedule({p.heal_us, 0, event_kind::link_up, 0, 0, 0, k});
  }
  for (node_id i = 0; i < n; ++i) {
    sink out(*this, i);
    nodes_[i]->start(0, out);
  }
  series_.push_back(measure());
}

event_simulation::~event_simulation() = default;

std::uint64_t event_simulation::digest(const gossip::message& m) const {
  const auto& h = m.header;
  std::uint64_t d = hash_combine(static_cast<std::uint64_t>(h.kind), h.seq);
  d = hash_combine(d, h.round);
  d = hash_combine(d, (static_cast<std::uint64_t>(h.step) << 32) | h.degree);
  d = hash_combine(d, std::bit_cast<std::uint64_t>(h.weight));
  if (m.tensors) {
    for (std::size_t t = 0; t < m.tensors->size(); ++t) {
      const auto v = (*m.tensors)[t];
      const auto* bytes = static_cast<const unsigned char*>(v.data);
      // A prefix of every tensor identifies the value cheaply; full_trace_digest hashes all.
      const std::size_t len =
          scenario_.full_trace_digest ? v.bytes() : std::min<std::size_t>(v.bytes(), 64);
      for (std::size_t o = 0; o + 8 <= len; o += 8) {
        std::uint64_t word;
        std::memcpy(&word, bytes + o, 8);
        d = hash_combine(d, word);
      }
    }
  }
  return d;
}

void event_simulation::on_send(node_id from, gossip::peer_id to, gossip::message msg) {
  MWS_SIM_ASSERT(to.value < graph_.size());
  in_flight f;
  std::uint64_t bytes = 0;
  if (scenario_.wire_faithful) {
    f.wire = std::make_shared<std::vector<std::uint8_t>>(gossip::encode(msg, manifest_));
    bytes = f.wire->size();
  } else {
    bytes = gossip::wire_size(msg, manifest_);
  }
  if (msg.header.kind == gossip::message_kind::push_sum_running)
    running_[(static_cast<std::uint64_t>(from) << 32) | to.value].sent = msg;
  net_.send(engine_.now_us(), from, to.value, bytes, net_rng_, arrivals_);
  if (arrivals_.empty()) return;
  if (msg.header.kind == gossip::message_kind::push_sum_plain)
    for (std::size_t k = 0; k < arrivals_.size(); ++k)
      account_plain(msg, 1.0);
  const std::uint64_t dig = digest(msg);
  if (!scenario_.wire_faithful) f.msg = std::move(msg);
  for (std::size_t k = 0; k < arrivals_.size(); ++k) {
    std::uint64_t slot;
    if (!free_flights_.empty()) {
      slot = free_flights_.back();
      free_flights_.pop_back();
    } else {
      slot = flights_.size();
      flights_.emplace_back();
    }
    flights_[slot] = (k + 1 == arrivals_.size()) ? std::move(f) : f;
    engine_.schedule({arrivals_[k], 0, event_kind::deliver, from, to.value, dig, slot});
  }
}

void event_simulation::on_timer(node_id who, gossip::time_us at_us) {
  const sim_time_us now = engine_.now_us();
  sim_time_us at = std::max(at_us, now);
  const double factor = net_.tick_factor(who);
  if (factor != 1.0)
    at = now + static_cast<sim_time_us>(std::ceil(static_cast<double>(at - now) * factor));
  if (at == last_timer_[who]) return;  // timers are never cancelled, so equal times coalesce
  last_timer_[who] = at;
  engine_.schedule({at, 0, event_kind::tick, who, who, 0, 0});
}

void event_simulation::check_staleness(node_id v) {
  if (scenario_.algo != gossip::algorithm::sync || !scenario_.check_staleness) return;
  const auto rv = nodes_[v]->stats().round;
  for (node_id u : graph_.neighbours(v)) {
    const auto ru = nodes_[u]->stats().round;
    if (rv > ru + scenario_.staleness + 1 || ru > rv + scenario_.staleness + 1)
      ++staleness_violations_;
  }
}

void event_simulation::notify_partition(std::size_t k, bool up) {
  const auto& p = scenario_.network.partitions[k];
  if (p.one_way) return;  // a one-way cut is silent: nodes only see missing messages
  std::vector<char> side(graph_.size(), 0);
  for (node_id n : p.side)
    side[n] = 1;
  const sim_time_us now = engine_.now_us();
  for (node_id a = 0; a < graph_.size(); ++a) {
    if (net_.down(a)) continue;
    sink out(*this, a);
    for (auto peer : peers_[a]) {
      if (peer.value == a || side[peer.value] == side[a]) continue;
      if (up)
        nodes_[a]->on_link_up(peer, now, out);
      else
        nodes_[a]->on_link_down(peer, now, out);
    }
  }
}

void event_simulation::dispatch(const event& e) {
  const sim_time_us now = e.at_us;
  switch (e.kind) {
    case event_kind::deliver: {
      in_flight f = std::move(flights_[e.arg]);
      flights_[e.arg] = {};
      free_flights_.push_back(e.arg);
      if (f.wire) {
        auto decoded = gossip::decode(*f.wire, manifest_, f.wire);
        if (!decoded) {
          ++refused_;
          break;
        }
        f.msg = std::move(*decoded);
      }
      if (f.msg.header.kind == gossip::message_kind::push_sum_plain) account_plain(f.msg, -1.0);
      if (net_.down(e.dst)) break;
      sink out(*this, e.dst);
      const error_code ec = nodes_[e.dst]->on_message({e.src}, f.msg, now, out);
      if (ec) ++refused_;
      if (!ec && f.msg.header.kind == gossip::message_kind::push_sum_running) {
        auto& link = running_[(static_cast<std::uint64_t>(e.src) << 32) | e.dst];
        if (f.msg.header.seq > link.applied_seq) {
          link.applied_seq = f.msg.header.seq;
          link.applied = f.msg;
        }
      }
      check_staleness(e.dst);
      break;
    }
    case event_kind::tick: {
      if (e.at_us == last_timer_[e.dst]) last_timer_[e.dst] = -1;
      if (net_.down(e.dst)) break;
      sink out(*this, e.dst);
      nodes_[e.dst]->on_tick(now, out);
      check_staleness(e.dst);
      break;
    }
    case event_kind::crash: {
      net_.set_down(e.dst, true);
      for (auto peer : peers_[e.dst]) {
        if (peer.value == e.dst || net_.down(peer.value)) continue;
        sink out(*this, peer.value);
        nodes_[peer.value]->on_link_down({e.dst}, now, out);
      }
      break;
    }
    case event_kind::restart: {
      net_.set_down(e.dst, false);
      for (auto peer : peers_[e.dst]) {
        if (peer.value == e.dst || net_.down(peer.value)) continue;
        sink out(*this, peer.value);
        nodes_[peer.value]->on_link_up({e.dst}, now, out);
      }
      // The node kept its state (as if restored from its checkpoint); its timer chain died
      // with it, so it ticks now.
      sink out(*this, e.dst);
      nodes_[e.dst]->on_tick(now, out);
      break;
    }
    case event_kind::link_down:
    case event_kind::link_up:
      notify_partition(e.arg, e.kind == event_kind::link_up);
      break;
    case event_kind::sample:
    case event_kind::local_update:
      break;
  }
}

void event_simulation::account_plain(const gossip::message& m, double sign) {
  if (plain_x_.empty()) plain_x_.assign(scenario_.params, 0.0);
  const float* x = host_floats((*m.tensors)[0]);
  for (std::size_t k = 0; k < scenario_.params; ++k)
    plain_x_[k] += sign * static_cast<double>(x[k]);
  plain_w_ += sign * m.header.weight;
}

bool event_simulation::step() {
  if (step_ >= scenario_.steps) return false;
  ++step_;
  const sim_time_us now = engine_.now_us();
  if (workload_->has_updates() && step_ % scenario_.workload.update_every == 0) {
    std::span<float> delta(static_cast<float*>(delta_.data()), scenario_.params);
    const gpu::const_tensor_view dv = delta_.view();
    for (node_id i = 0; i < graph_.size(); ++i) {
      if (net_.down(i)) continue;
      const auto z = estimate(i);
      workload_->update(i, z, nodes_[i]->state().w, delta);  // scaled by w: moves x/w
      const auto ec = nodes_[i]->apply_local_update(std::span(&dv, 1), 0.0, now);
      MWS_SIM_ASSERT(!ec);
      for (std::size_t k = 0; k < scenario_.params; ++k)
        injected_x_[k] += static_cast<double>(delta[k]);
    }
  }
  engine_.run_until(static_cast<sim_time_us>(step_) * step_us_,
                    [this](const event& e) { dispatch(e); });
  if (step_ % scenario_.sample_every == 0 || step_ == scenario_.steps) series_.push_back(measure());
  return step_ < scenario_.steps;
}

std::vector<double> event_simulation::estimate(node_id i) const {
  const auto& st = nodes_[i]->state();
  const float* x = host_floats(st.x[0]);
  std::vector<double> z(scenario_.params);
  for (std::size_t k = 0; k < z.size(); ++k)
    z[k] = static_cast<double>(x[k]) / st.w;
  return z;
}

std::vector<float> event_simulation::raw_x(node_id i) const {
  const float* x = host_floats(nodes_[i]->state().x[0]);
  return std::vector<float>(x, x + scenario_.params);
}

std::vector<double> event_simulation::exact_mean() const {
  std::vector<double> mu(injected_x_);
  for (auto& v : mu)
    v /= injected_w_;
  return mu;
}

sample event_simulation::measure() const {
  sample s;
  s.step = step_;
  s.time_us = engine_.now_us();
  const node_id n = graph_.size();
  const std::size_t p = scenario_.params;
  const auto mu = exact_mean();
  double mu_max = 0.0, inj_max = 0.0;
  for (std::size_t k = 0; k < p; ++k) {
    mu_max = std::max(mu_max, std::abs(mu[k]));
    inj_max = std::max(inj_max, std::abs(injected_x_[k]));
  }
  if (mu_max == 0.0) mu_max = 1.0;
  if (inj_max == 0.0) inj_max = 1.0;
  std::vector<double> mean(p, 0.0), xsum(p, 0.0);
  double wsum = 0.0, rounds = 0.0;
  // A node with w = 0 (exact mode's extra members between handing over their mass and getting
  // their share back) holds no estimate; it counts for mass only.
  std::uint32_t estimating = 0;
  for (node_id i = 0; i < n; ++i) {
    const auto& st = nodes_[i]->state();
    const float* x = host_floats(st.x[0]);
    const double inv_w = st.w > 0.0 ? 1.0 / st.w : 0.0;
    if (st.w > 0.0) ++estimating;
    for (std::size_t k = 0; k < p; ++k) {
      const auto v = static_cast<double>(x[k]);
      xsum[k] += v;
      mean[k] += v * inv_w;
    }
    wsum += st.w;
    rounds += static_cast<double>(nodes_[i]->stats().round);
    s.staleness_used = std::max(s.staleness_used, nodes_[i]->stats().max_staleness_used);
  }
  for (auto& m : mean)
    m /= std::max<std::uint32_t>(estimating, 1);
  double sq = 0.0, err = 0.0;
  for (node_id i = 0; i < n; ++i) {
    const auto& st = nodes_[i]->state();
    if (!(st.w > 0.0)) continue;
    const float* x = host_floats(st.x[0]);
    const double inv_w = 1.0 / st.w;
    for (std::size_t k = 0; k < p; ++k) {
      const double z = static_cast<double>(x[k]) * inv_w;
      sq += (z - mean[k]) * (z - mean[k]);
      err = std::max(err, std::abs(z - mu[k]));
    }
    if (scenario_.algo == gossip::algorithm::sync) {
      const auto ri = nodes_[i]->stats().round;
      for (node_id j : graph_.neighbours(i)) {
        const auto rj = nodes_[j]->stats().round;
        s.round_gap = std::max<std::uint64_t>(s.round_gap, ri > rj ? ri - rj : rj - ri);
      }
    }
  }
  // Mass in flight belongs to the mesh: it is on its way, not lost.
  for (const auto& [key, link] : running_) {
    if (!link.sent.tensors) continue;
    const float* sent = host_floats((*link.sent.tensors)[0]);
    // The running sum restarts from zero in a new frame (header.round) once the receiver has
    // acknowledged everything of the old one; an applied sum of an older frame is all applied.
    const bool same_frame =
        link.applied.tensors && link.applied.header.round == link.sent.header.round;
    const float* applied = same_frame ? host_floats((*link.applied.tensors)[0]) : nullptr;
    for (std::size_t k = 0; k < p; ++k)
      xsum[k] += static_cast<double>(sent[k]) - (applied ? static_cast<double>(applied[k]) : 0.0);
    wsum += link.sent.header.weight - (same_frame ? link.applied.header.weight : 0.0);
  }
  if (!plain_x_.empty()) {
    for (std::size_t k = 0; k < p; ++k)
      xsum[k] += plain_x_[k];
    wsum += plain_w_;
  }
  double drift = 0.0;
  for (std::size_t k = 0; k < p; ++k)
    drift = std::max(drift, std::abs(xsum[k] - injected_x_[k]));
  s.round_mean = rounds / n;
  s.distance_rms = std::sqrt(sq / std::max<std::uint32_t>(estimating, 1));
  s.max_relative_error = err / mu_max;
  s.mass_drift_x = drift / inj_max;
  s.mass_drift_w = std::abs(wsum - injected_w_) / injected_w_;
  s.messages = net_.counters().sent;
  s.bytes = net_.counters().bytes_sent;
  if (workload_->has_loss()) s.loss = workload_->loss(mean);
  return s;
}

run_summary event_simulation::summary() const {
  run_summary r;
  r.mode = std::string(to_string(scenario_.mode));
  r.algorithm = std::string(to_string(scenario_.algo));
  if (scenario_.algo == gossip::algorithm::push_sum && !scenario_.running_sums)
    r.algorithm = "push-sum-plain";
  r.topology = std::string(to_string(scenario_.topology.kind));
  r.workload = std::string(to_string(scenario_.workload.kind));
  r.seed = scenario_.seed;
  r.nodes = graph_.size();
  r.params = scenario_.params;
  r.steps = step_;
  const bool per_round =
      scenario_.algo == gossip::algorithm::sync || scenario_.algo == gossip::algorithm::exact;
  r.contraction_unit = per_round ? "round" : "step";
  r.predicted_contraction = scenario_.algo == gossip::algorithm::sync ? predicted_ : 0.0;
  r.measured_contraction = measured_contraction(series_, per_round);
  r.last = series_.back();
  r.trace_hash = engine_.trace_hash();
  r.events = engine_.dispatched();
  r.staleness_violations = staleness_violations_;
  r.refused = refused_;
  const auto& c = net_.counters();
  r.lost = c.lost;
  r.duplicated = c.duplicated;
  r.cut = c.cut;
  r.queue_drops = c.queue_drops;
  r.to_down_node = c.to_down_node;
  return r;
}

run_summary event_simulation::run(const progress_fn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  while (step()) {
    if (progress) progress(step_, scenario_.steps);
  }
  if (progress) progress(step_, scenario_.steps);
  run_summary r = summary();
  r.wall_s = wall_seconds_since(t0);
  return r;
}

result<batched_output> run_batched(const scenario& s, const progress_fn& progress) {
  rng root(s.seed);
  rng topo_rng = root.fork(stream_topology);
  auto g = make_topology(s.topology, topo_rng);
  if (!g) return g.error();
  if (auto ok = validate(s, g->size()); !ok) return ok.error();
  const auto t0 = std::chrono::steady_clock::now();
  const node_id n = g->size();
  const mixing_matrix w = metropolis_hastings(*g);
  gpu::backend_selection device = gpu::make_backend(s.device);
  if (!device.chosen) return fail(errc::unsupported, "batched mode: " + device.reason);
  auto made = batched_sync::create(*device.chosen, w, s.params);
  if (!made) return made.error();
  batched_sync& b = *made;
  detail::workload work(s.workload, n, s.params, rng(s.seed).fork(stream_workload));
  std::vector<double> mu(s.params, 0.0);
  std::vector<float> x(s.params);
  for (node_id i = 0; i < n; ++i) {
    work.initial(i, x);
    b.load(i, x);
    for (std::size_t k = 0; k < s.params; ++k)
      mu[k] += static_cast<double>(x[k]);
  }
  for (auto& m : mu)
    m /= n;
  batched_output out;
  auto measure = [&](std::uint64_t round) {
    const auto st = b.stats(mu);
    sample smp;
    smp.step = round;
    smp.round_mean = static_cast<double>(round);
    smp.distance_rms = st.distance_rms;
    smp.max_relative_error = st.max_relative_error;
    smp.mass_drift_x = st.mass_drift;
    smp.messages = round * 2 * g->edge_count();
    smp.bytes = smp.messages * s.params * sizeof(float);
    out.series.push_back(smp);
  };
  measure(0);
  for (std::uint64_t r = 1; r <= s.steps; ++r) {
    if (auto ec = b.round())
      return fail(errc::unsupported,
                  "batched mode: round " + std::to_string(r) + ": " + ec.message());
    if (r % s.sample_every == 0 || r == s.steps) measure(r);
    if (progress) progress(r, s.steps);
  }
  auto& sum = out.summary;
  sum.mode = "batched";
  sum.device = device.reason;
  sum.algorithm = "sync";
  sum.topology = std::string(to_string(s.topology.kind));
  sum.workload = std::string(to_string(s.workload.kind));
  sum.seed = s.seed;
  sum.nodes = n;
  sum.params = s.params;
  sum.steps = s.steps;
  sum.contraction_unit = "round";
  sum.predicted_contraction = mixing_spectrum(w).slem;
  sum.measured_contraction = measured_contraction(out.series, true);
  sum.last = out.series.back();
  sum.wall_s = wall_seconds_since(t0);
  return out;
}

result<batched_output> run_scenario(const scenario& s, const progress_fn& progress) {
  if (s.mode == sim_mode::batched) return run_batched(s, progress);
  auto sim = event_simulation::create(s);
  if (!sim) return sim.error();
  batched_output out;
  out.summary = (*sim)->run(progress);
  out.series = (*sim)->series();
  return out;
}

}  // namespace mws::sim
