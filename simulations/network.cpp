#include "simulations/network.hpp"

#include <algorithm>
#include <cmath>

namespace mws::sim {

result<latency_kind> parse_latency_kind(std::string_view name) {
  if (name == "constant") return latency_kind::constant;
  if (name == "uniform") return latency_kind::uniform;
  if (name == "normal") return latency_kind::normal;
  if (name == "lognormal") return latency_kind::lognormal;
  return fail(errc::bad_scenario, "unknown latency distribution '" + std::string(name) +
                                      "' (one of: constant, uniform, normal, lognormal)");
}

std::string_view to_string(latency_kind kind) noexcept {
  switch (kind) {
    case latency_kind::constant:
      return "constant";
    case latency_kind::uniform:
      return "uniform";
    case latency_kind::normal:
      return "normal";
    case latency_kind::lognormal:
      return "lognormal";
  }
  return "?";
}

sim_time_us latency_model::sample(rng& random) const noexcept {
  double v = a_us;
  switch (kind) {
    case latency_kind::constant:
      break;
    case latency_kind::uniform:
      v = random.uniform(a_us, b_us);
      break;
    case latency_kind::normal:
      v = a_us + b_us * random.normal();
      break;
    case latency_kind::lognormal:
      v = a_us * deterministic_exp(b_us * random.normal());
      break;
  }
  return static_cast<sim_time_us>(std::max(0.0, std::round(v)));
}

namespace {

result<bool> check_link(const link_model& m, const std::string& where) {
  auto bad = [&](const std::string& what) { return fail(errc::bad_scenario, where + what); };
  if (!(m.latency.a_us >= 0.0) || !(m.latency.b_us >= 0.0) || !std::isfinite(m.latency.a_us) ||
      !std::isfinite(m.latency.b_us))
    return bad("latency parameters must be finite and >= 0");
  if (m.latency.kind == latency_kind::uniform && m.latency.b_us < m.latency.a_us)
    return bad("uniform latency needs max >= min");
  if (m.latency.kind == latency_kind::lognormal && m.latency.b_us > 5.0)
    return bad("lognormal latency sigma must be <= 5");
  if (!(m.bandwidth_bytes_per_s >= 0.0) || !std::isfinite(m.bandwidth_bytes_per_s))
    return bad("bandwidth must be finite and >= 0");
  if (!(m.loss_p >= 0.0 && m.loss_p <= 1.0)) return bad("loss must be in [0, 1]");
  if (!(m.duplicate_p >= 0.0 && m.duplicate_p <= 1.0)) return bad("duplication must be in [0, 1]");
  return true;
}

}  // namespace

result<bool> validate(const network_spec& spec, node_id nodes) {
  if (auto r = check_link(spec.links, "network: "); !r) return r;
  for (const auto& o : spec.overrides) {
    if (o.node >= nodes) return fail(errc::bad_scenario, "link override: node out of range");
    if (auto r = check_link(o.model, "link override: "); !r) return r;
  }
  for (const auto& p : spec.partitions) {
    if (p.start_us < 0 || p.heal_us < p.start_us)
      return fail(errc::bad_scenario, "partition: needs 0 <= start <= heal");
    if (p.side.empty()) return fail(errc::bad_scenario, "partition: empty side");
    for (node_id n : p.side)
      if (n >= nodes) return fail(errc::bad_scenario, "partition: node out of range");
  }
  for (const auto& c : spec.crashes) {
    if (c.node >= nodes) return fail(errc::bad_scenario, "crash: node out of range");
    if (c.at_us < 0 || (c.restart_us >= 0 && c.restart_us < c.at_us))
      return fail(errc::bad_scenario, "crash: needs 0 <= at <= restart");
  }
  for (const auto& s : spec.slow) {
    if (s.node >= nodes) return fail(errc::bad_scenario, "slow node: node out of range");
    if (!(s.tick_factor >= 1.0 && s.tick_factor <= 1e6) ||
        !(s.processing_factor >= 1.0 && s.processing_factor <= 1e6))
      return fail(errc::bad_scenario, "slow node: factors must be in [1, 1e6]");
  }
  return true;
}

network::network(node_id nodes, network_spec spec)
    : n_(nodes),
      spec_(std::move(spec)),
      down_(nodes, 0),
      tick_factor_(nodes, 1.0),
      processing_factor_(nodes, 1.0),
      override_of_(nodes, -1) {
  for (std::size_t i = 0; i < spec_.overrides.size(); ++i)
    override_of_[spec_.overrides[i].node] = static_cast<int>(i);
  for (const auto& s : spec_.slow) {
    tick_factor_[s.node] = s.tick_factor;
    processing_factor_[s.node] = s.processing_factor;
  }
  for (const auto& p : spec_.partitions) {
    std::vector<char> side(nodes, 0);
    for (node_id n : p.side)
      side[n] = 1;
    partition_side_.push_back(std::move(side));
  }
}

const link_model& network::model_for(node_id a, node_id b) const noexcept {
  if (override_of_[a] >= 0) return spec_.overrides[static_cast<std::size_t>(override_of_[a])].model;
  if (override_of_[b] >= 0) return spec_.overrides[static_cast<std::size_t>(override_of_[b])].model;
  return spec_.links;
}

bool network::cut(sim_time_us now_us, node_id a, node_id b) const noexcept {
  for (std::size_t k = 0; k < spec_.partitions.size(); ++k) {
    const auto& p = spec_.partitions[k];
    if (now_us < p.start_us || now_us >= p.heal_us) continue;
    const bool sa = partition_side_[k][a] != 0, sb = partition_side_[k][b] != 0;
    if (sa == sb) continue;
    if (!p.one_way || sa) return true;
  }
  return false;
}

void network::send(sim_time_us now_us, node_id a, node_id b, std::uint64_t bytes, rng& random,
                   std::vector<sim_time_us>& arrivals) {
  arrivals.clear();
  ++counters_.sent;
  counters_.bytes_sent += bytes;
  if (down_[a] || down_[b]) {
    ++counters_.to_down_node;
    return;
  }
  if (cut(now_us, a, b)) {
    ++counters_.cut;
    return;
  }
  const link_model& m = model_for(a, b);
  // Draw loss and duplication first, in a fixed order, so that the number of draws per send
  // does not depend on the outcome of the queue check.
  const bool lost = random.bernoulli(m.loss_p);
  const bool dup = random.bernoulli(m.duplicate_p);
  sim_time_us departs_us = now_us;
  if (m.bandwidth_bytes_per_s > 0.0) {
    auto& link = links_[(static_cast<std::uint64_t>(a) << 32) | b];
    const sim_time_us start_us = std::max(now_us, link.busy_until_us);
    const double backlog_bytes =
        static_cast<double>(start_us - now_us) * m.bandwidth_bytes_per_s * 1e-6;
    if (backlog_bytes + static_cast<double>(bytes) > static_cast<double>(m.queue_bytes_max)) {
      ++counters_.queue_drops;
      return;
    }
    const auto serialise_us = static_cast<sim_time_us>(
        std::ceil(static_cast<double>(bytes) * 1e6 / m.bandwidth_bytes_per_s));
    link.busy_until_us = start_us + serialise_us;
    departs_us = link.busy_until_us;
  }
  if (lost) {
    ++counters_.lost;
    return;
  }
  auto arrival = [&] {
    const sim_time_us latency_us = m.latency.sample(random);
    const double extra = (processing_factor_[b] - 1.0) * static_cast<double>(latency_us);
    return departs_us + latency_us + static_cast<sim_time_us>(extra);
  };
  arrivals.push_back(arrival());
  ++counters_.delivered_scheduled;
  if (dup) {
    arrivals.push_back(arrival());
    ++counters_.duplicated;
    ++counters_.delivered_scheduled;
  }
}

}  // namespace mws::sim
