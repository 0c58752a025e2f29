#include "simulations/scenario.hpp"

#include <cmath>

namespace mws::sim {

std::string_view to_string(sim_mode m) noexcept {
  return m == sim_mode::event ? "event" : "batched";
}

std::string_view to_string(gossip::algorithm a) noexcept {
  switch (a) {
    case gossip::algorithm::push_sum:
      return "push-sum";
    case gossip::algorithm::pairwise:
      return "pairwise";
    case gossip::algorithm::sync:
      return "sync";
    case gossip::algorithm::exact:
      return "exact";
  }
  return "?";
}

std::string_view to_string(workload_kind w) noexcept {
  switch (w) {
    case workload_kind::averaging:
      return "averaging";
    case workload_kind::tracking:
      return "tracking";
    case workload_kind::sgd:
      return "sgd";
  }
  return "?";
}

result<gpu::backend_choice> parse_device(std::string_view name) {
  if (auto d = gpu::parse_backend_choice(name)) return *d;
  return fail(errc::bad_scenario, "unknown device '" + std::string(name) + "' (auto, cpu, cuda)");
}

result<sim_mode> parse_mode(std::string_view name) {
  if (name == "event") return sim_mode::event;
  if (name == "batched") return sim_mode::batched;
  return fail(errc::bad_scenario, "unknown mode '" + std::string(name) + "' (event, batched)");
}

result<gossip::algorithm> parse_algorithm(std::string_view name) {
  if (name == "push-sum") return gossip::algorithm::push_sum;
  if (name == "pairwise") return gossip::algorithm::pairwise;
  if (name == "sync") return gossip::algorithm::sync;
  if (name == "exact") return gossip::algorithm::exact;
  return fail(errc::bad_scenario,
              "unknown algorithm '" + std::string(name) + "' (push-sum, pairwise, sync, exact)");
}

result<workload_kind> parse_workload(std::string_view name) {
  if (name == "averaging") return workload_kind::averaging;
  if (name == "tracking") return workload_kind::tracking;
  if (name == "sgd") return workload_kind::sgd;
  return fail(errc::bad_scenario,
              "unknown workload '" + std::string(name) + "' (averaging, tracking, sgd)");
}

result<sgd_problem> parse_problem(std::string_view name) {
  if (name == "least-squares") return sgd_problem::least_squares;
  if (name == "logistic") return sgd_problem::logistic;
  return fail(errc::bad_scenario,
              "unknown SGD problem '" + std::string(name) + "' (least-squares, logistic)");
}

result<bool> validate(const scenario& s, node_id nodes) {
  auto bad = [](const std::string& what) { return fail(errc::bad_scenario, what); };
  if (nodes < 2) return fail(errc::too_few_nodes, "a mesh needs at least two nodes");
  if (s.params < 1 || s.params > (std::size_t{1} << 31))
    return bad("params must be between 1 and 2^31");
  if (s.steps < 1 || s.steps > 100000000) return bad("steps must be between 1 and 1e8");
  if (s.sample_every < 1) return bad("sample_every must be >= 1");
  if (s.step_us < 0) return bad("step_us must be >= 0");
  if (s.tick_us <= 0 || s.timeout_us <= 0) return bad("tick_us and timeout_us must be > 0");
  if (s.algo == gossip::algorithm::push_sum && (s.fanout < 1 || s.fanout > nodes - 1))
    return bad("fanout must be between 1 and the number of neighbours");
  if (s.staleness > 1000) return bad("staleness must be <= 1000");
  const auto& w = s.workload;
  if (w.update_every < 1) return bad("update_every must be >= 1");
  if (!(w.update_scale >= 0.0) || !std::isfinite(w.update_scale))
    return bad("update_scale must be finite and >= 0");
  if (!(w.learning_rate > 0.0) || !std::isfinite(w.learning_rate))
    return bad("learning_rate must be finite and > 0");
  if (!(w.heterogeneity >= 0.0) || !std::isfinite(w.heterogeneity))
    return bad("heterogeneity must be finite and >= 0");
  if (w.samples_per_node < 1 || w.samples_per_node > 100000)
    return bad("samples_per_node must be between 1 and 100000");
  if (s.mode == sim_mode::batched) {
    if (s.algo != gossip::algorithm::sync)
      return fail(errc::unsupported, "batched mode runs the sync algorithm only");
    if (s.staleness != 0) return fail(errc::unsupported, "batched mode needs staleness 0");
    if (w.kind != workload_kind::averaging)
      return fail(errc::unsupported, "batched mode runs the averaging workload only");
    const auto& n = s.network;
    if (!n.partitions.empty() || !n.crashes.empty() || !n.slow.empty() || n.links.loss_p > 0.0 ||
        n.links.duplicate_p > 0.0)
      return fail(errc::unsupported, "batched mode models no faults (use the event mode)");
  } else if (s.device == gpu::backend_choice::cuda) {
    return fail(errc::unsupported,
                "the event mode runs on the CPU; device = cuda needs batched mode");
  }
  return validate(s.network, nodes);
}

sim_time_us effective_step_us(const scenario& s) noexcept {
  if (s.step_us > 0) return s.step_us;
  const auto& l = s.network.links.latency;
  const double typical = l.kind == latency_kind::uniform ? 0.5 * (l.a_us + l.b_us) : l.a_us;
  return std::max<sim_time_us>(1, static_cast<sim_time_us>(typical) + s.tick_us);
}

}  // namespace mws::sim
