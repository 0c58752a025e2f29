// mws-sim: runs one convergence scenario of mws's averaging algorithms on a simulated mesh and
// prints what happened. Scenario from a TOML file and/or flags (flags win); with no arguments a
// built-in demo scenario runs. Exit status: 0 ok, 2 bad scenario or usage, 1 failure to write
// an output file.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/mws-sim/scenario_file.hpp"
#include "simulations/membership_study.hpp"
#include "simulations/simulation.hpp"

namespace {

using namespace mws::sim;

// Registers an option bound to a private value and remembers how to apply it to a scenario
// when (and only when) it was given, so that flags override the TOML file.
class overrides {
 public:
  template <class T, class Apply>
  CLI::Option* add(CLI::App& app, const std::string& name, const std::string& help, Apply apply) {
    auto value = std::make_shared<T>();
    CLI::Option* opt = app.add_option(name, *value, help);
    steps_.push_back([opt, value, apply](scenario& s) -> result<bool> {
      if (opt->count() == 0) return true;
      return apply(s, *value);
    });
    return opt;
  }
  result<bool> apply(scenario& s) const {
    for (const auto& f : steps_)
      if (auto r = f(s); !r) return r;
    return true;
  }

 private:
  std::vector<std::function<result<bool>(scenario&)>> steps_;
};

template <class T>
result<bool> in_range(const char* name, std::int64_t v, std::int64_t lo, std::int64_t hi, T& out) {
  if (v < lo || v > hi)
    return fail(errc::bad_scenario, std::string(name) + " must be between " + std::to_string(lo) +
                                        " and " + std::to_string(hi) + " (got " +
                                        std::to_string(v) + ")");
  out = static_cast<T>(v);
  return true;
}

// Redraws a one-line bar on stderr when the percentage changes.
class progress_bar {
 public:
  void operator()(std::uint64_t step, std::uint64_t steps) {
    const int pct = static_cast<int>(100 * step / std::max<std::uint64_t>(steps, 1));
    if (pct == shown_) return;
    shown_ = pct;
    const int width = 40, filled = pct * width / 100;
    std::fprintf(stderr, "\r[%.*s%*s] %3d%% step %" PRIu64 "/%" PRIu64, filled,
                 "########################################", width - filled, "", pct, step, steps);
    if (step >= steps) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  int shown_ = -1;
};

void print_summary(const run_summary& r) {
  std::printf("\nmws-sim: %s mode, %s on %s, %u nodes x %zu params, %s workload, seed %" PRIu64
              "\n",
              r.mode.c_str(), r.algorithm.c_str(), r.topology.c_str(), r.nodes, r.params,
              r.workload.c_str(), r.seed);
  std::printf("  %-34s %s\n", "quantity", "value");
  auto row = [](const char* name, const std::string& v) {
    std::printf("  %-34s %s\n", name, v.c_str());
  };
  auto g = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6g", v);
    return std::string(b);
  };
  auto u = [](std::uint64_t v) { return std::to_string(v); };
  if (!r.device.empty()) row("mixed on", r.device);
  row("steps", u(r.steps));
  row("virtual time (ms)", g(static_cast<double>(r.last.time_us) / 1000.0));
  if (r.last.round_mean > 0) row("mean rounds completed", g(r.last.round_mean));
  row("consensus distance (RMS)", g(r.last.distance_rms));
  row("max relative error vs exact mean", g(r.last.max_relative_error));
  row("mass drift x (relative)", g(r.last.mass_drift_x));
  row("mass drift w (relative)", g(r.last.mass_drift_w));
  if (r.predicted_contraction > 0)
    row(("predicted contraction per " + r.contraction_unit).c_str(), g(r.predicted_contraction));
  row(("measured contraction per " + r.contraction_unit).c_str(),
      r.measured_contraction > 0 ? g(r.measured_contraction) : "n/a (too few samples above floor)");
  if (r.workload == "sgd") row("loss at the mean model", g(r.last.loss));
  row("messages sent", u(r.last.messages));
  row("bytes sent", u(r.last.bytes));
  if (r.mode == "event") {
    row("lost / duplicated / cut", u(r.lost) + " / " + u(r.duplicated) + " / " + u(r.cut));
    row("queue drops / to down node", u(r.queue_drops) + " / " + u(r.to_down_node));
    row("refused by nodes", u(r.refused));
    if (r.algorithm == "sync") {
      row("max round gap (last sample)", u(r.last.round_gap));
      row("staleness violations", u(r.staleness_violations));
    }
    row("events", u(r.events));
    row("trace hash", hex64(r.trace_hash));
  }
  row("wall time (s)", g(r.wall_s));
}

}  // namespace

// --membership: the SWIM study of simulations/membership_study.hpp on the scenario's nodes,
// loss, latency and seed.
int run_membership(const scenario& s, bool quiet, double settle_max_s, double phase_s) {
  membership_study_config c;
  c.nodes = s.topology.nodes;
  c.loss_p = s.network.links.loss_p;
  c.latency = s.network.links.latency;
  c.seed = s.seed;
  if (settle_max_s > 0) c.settle_max_us = static_cast<sim_time_us>(settle_max_s * 1e6);
  if (phase_s > 0) c.phase_us = static_cast<sim_time_us>(phase_s * 1e6);
  if (!quiet) {
    // One plain line per 10 s of simulated time, tty or not: a big run is judged from its log.
    const auto began = std::chrono::steady_clock::now();
    c.on_progress = [began](const membership_progress& p) {
      const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - began;
      rusage ru{};
      getrusage(RUSAGE_SELF, &ru);
      std::fprintf(
          stderr,
          "mws-sim: membership %s, simulated %.0f s, %" PRIu64 " events, %" PRIu64
          " messages, %" PRIu64 " suspicions, %" PRIu64
          " false failures, backlog %zu, CPU %.0f s, wall %.0f s, peak RSS %ld MiB\n",
          p.phase, p.simulated_s, p.events, p.messages, p.suspicions, p.false_failures, p.backlog,
          static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6,
          wall.count(), ru.ru_maxrss / 1024);
      std::fflush(stderr);
    };
  }
  try {
    const auto r = run_membership_study(c);
    auto seconds = [](double v) {
      return v < 0 ? std::string("not within the phase") : std::to_string(v) + " s";
    };
    std::printf("SWIM membership, %u nodes, loss %.3f, seed %llu\n", c.nodes, c.loss_p,
                static_cast<unsigned long long>(c.seed));
    std::printf("  join reaches 99.9%%               %s\n", seconds(r.join_spread_s).c_str());
    std::printf("  leave reaches 99.9%%              %s\n", seconds(r.leave_spread_s).c_str());
    std::printf("  crash: first suspicion           %s\n", seconds(r.first_suspicion_s).c_str());
    std::printf("  crash: dead at 99.9%%             %s\n", seconds(r.failure_spread_s).c_str());
    std::printf("  false failures                   %llu\n",
                static_cast<unsigned long long>(r.false_failures));
    std::printf("  suspicion events                 %llu\n",
                static_cast<unsigned long long>(r.suspicions));
    std::printf("  messages per node per second     %.2f\n", r.messages_per_node_s);
    std::printf("  simulated                        %.0f s\n", r.simulated_s);
    std::printf("  trace hash                       0x%016llx\n",
                static_cast<unsigned long long>(r.trace_hash));
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "mws-sim: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mws-sim: out of memory (reduce --nodes)\n");
    return 2;
  }
  return 0;
}

int main(int argc, char** argv) {
  CLI::App app{
      "mws-sim: simulate many mws nodes averaging a model, in one process, in virtual time.\n"
      "Every node runs the real gossip/ state machine; the network, faults and clock are\n"
      "simulated, and a run replays exactly from its seed (see the trace hash at the end).\n\n"
      "Examples:\n"
      "  mws-sim                                   built-in demo (64-node torus, sync)\n"
      "  mws-sim --topology ring --nodes 128 --algorithm push-sum --loss 0.2 --dup 0.1\n"
      "  mws-sim --algorithm push-sum --plain --loss 0.2          plain push-sum drifts\n"
      "  mws-sim --mode batched --nodes 100000 --params 1000 --steps 50\n"
      "  mws-sim --config study.toml --seed 7 --csv out.csv --json out.json\n"
      "  mws-sim --print-example > study.toml       every TOML key, commented\n"
      "  mws-sim --membership --nodes 1000 --loss 0.1   SWIM membership: join, leave, crash\n\n"
      "Plot a run: /usr/bin/python3 scripts/plot_convergence.py out.json -o plot.png"};
  app.set_help_flag("-h,--help", "Show this help and exit");

  std::string config_path, csv_path, json_path;
  bool quiet = false, print_example = false;
  app.add_option("-c,--config", config_path, "Scenario TOML file (flags override its values)");
  app.add_flag("--print-example", print_example, "Print a commented example TOML and exit");
  bool membership = false;
  app.add_flag("--membership", membership,
               "Study SWIM membership instead of averaging (uses --nodes, --loss, --seed, "
               "--latency*): time for a join, a leave and a crash to reach 99.9% of nodes, "
               "and false failures");
  double settle_max_s = 0, phase_s = 0;
  app.add_option("--settle-max", settle_max_s,
                 "--membership: end the settle phase after this many simulated seconds even if "
                 "broadcasts are still pending (default 600; under loss they always are)")
      ->check(CLI::PositiveNumber);
  app.add_option("--phase", phase_s,
                 "--membership: simulated seconds to watch each of join, leave and crash "
                 "(default 120)")
      ->check(CLI::PositiveNumber);
  app.add_option("--csv", csv_path, "Write the per-step metrics as CSV to this file");
  app.add_option("--json", json_path, "Write the summary and the per-step metrics as JSON");
  app.add_flag("-q,--quiet", quiet, "No progress bar (and no progress lines from --membership)");

  overrides ov;
  using i64 = std::int64_t;
  ov.add<i64>(app, "--seed", "Random seed (topology, network, workload, nodes)",
              [](scenario& s, i64 v) { return in_range("--seed", v, 0, INT64_MAX, s.seed); });
  ov.add<std::string>(app, "--mode", "event (default) or batched",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto m = parse_mode(v);
                        if (!m) return m.error();
                        s.mode = *m;
                        return true;
                      });
  ov.add<std::string>(app, "--device",
                      "batched mode: where rows are mixed: auto (default: a CUDA GPU when one is "
                      "usable, else the CPU), cpu or cuda; the results are the same bits",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto d = parse_device(v);
                        if (!d) return d.error();
                        s.device = *d;
                        return true;
                      });
  ov.add<std::string>(app, "-t,--topology",
                      "complete, ring, torus, hypercube, random-regular, erdos-renyi, exponential, "
                      "small-world, edge-list",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto k = parse_topology_kind(v);
                        if (!k) return k.error();
                        s.topology.kind = *k;
                        return true;
                      });
  ov.add<i64>(app, "-n,--nodes", "Number of nodes (>= 2)", [](scenario& s, i64 v) -> result<bool> {
    if (v < 2)
      return fail(errc::too_few_nodes,
                  "--nodes must be at least 2 (got " + std::to_string(v) + ")");
    return in_range("--nodes", v, 2, i64{1} << 26, s.topology.nodes);
  });
  ov.add<i64>(
      app, "--degree", "Degree of random-regular and small-world graphs",
      [](scenario& s, i64 v) { return in_range("--degree", v, 1, 1 << 20, s.topology.degree); });
  ov.add<double>(app, "--edge-p", "Edge probability of erdos-renyi graphs",
                 [](scenario& s, double v) {
                   s.topology.edge_p = v;
                   return result<bool>(true);
                 });
  ov.add<double>(app, "--rewire-p", "Rewiring probability of small-world graphs",
                 [](scenario& s, double v) {
                   s.topology.rewire_p = v;
                   return result<bool>(true);
                 });
  ov.add<std::string>(app, "--edges", "Edge-list file (implies --topology edge-list)",
                      [](scenario& s, const std::string& v) {
                        s.topology.kind = topology_kind::edge_list;
                        s.topology.file = v;
                        return result<bool>(true);
                      });
  ov.add<std::string>(app, "-a,--algorithm", "push-sum, pairwise, sync (default) or exact",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto a = parse_algorithm(v);
                        if (!a) return a.error();
                        s.algo = *a;
                        return true;
                      });
  bool plain = false, wire = false;
  auto* plain_opt = app.add_flag(
      "--plain", plain, "push-sum: plain shares instead of running sums (drifts under loss)");
  auto* wire_opt = app.add_flag("--wire", wire,
                                "Run every message through the FlatBuffers codec (wire-faithful)");
  ov.add<i64>(app, "--fanout", "push-sum: peers per tick",
              [](scenario& s, i64 v) { return in_range("--fanout", v, 1, 65536, s.fanout); });
  ov.add<i64>(app, "--staleness", "sync: staleness bound s (0 = bulk-synchronous)",
              [](scenario& s, i64 v) { return in_range("--staleness", v, 0, 1000, s.staleness); });
  ov.add<i64>(app, "--epochs", "exact: epochs to run", [](scenario& s, i64 v) {
    return in_range("--epochs", v, 0, 1000000, s.exact_epochs);
  });
  ov.add<i64>(app, "-p,--params", "Model size in f32 values per node", [](scenario& s, i64 v) {
    return in_range("--params", v, 1, i64{1} << 31, s.params);
  });
  ov.add<i64>(app, "-s,--steps", "Steps of virtual time (batched mode: rounds)",
              [](scenario& s, i64 v) { return in_range("--steps", v, 1, 100000000, s.steps); });
  ov.add<i64>(
      app, "--step-us", "Virtual time per step in microseconds (0 = latency + tick)",
      [](scenario& s, i64 v) { return in_range("--step-us", v, 0, i64{1} << 40, s.step_us); });
  ov.add<i64>(app, "--tick-us", "Node timer interval in microseconds", [](scenario& s, i64 v) {
    return in_range("--tick-us", v, 1, i64{1} << 40, s.tick_us);
  });
  ov.add<i64>(app, "--timeout-us", "Protocol timeout in microseconds", [](scenario& s, i64 v) {
    return in_range("--timeout-us", v, 1, i64{1} << 40, s.timeout_us);
  });
  ov.add<i64>(app, "--sample-every", "Steps between metric samples", [](scenario& s, i64 v) {
    return in_range("--sample-every", v, 1, 100000000, s.sample_every);
  });
  ov.add<std::string>(app, "--latency",
                      "Latency distribution: constant, uniform, normal, lognormal",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto k = parse_latency_kind(v);
                        if (!k) return k.error();
                        s.network.links.latency.kind = *k;
                        return true;
                      });
  ov.add<double>(app, "--latency-a-us", "Latency: constant value, min, mean or median (us)",
                 [](scenario& s, double v) {
                   s.network.links.latency.a_us = v;
                   return result<bool>(true);
                 });
  ov.add<double>(app, "--latency-b-us", "Latency: max, deviation, or log-space sigma",
                 [](scenario& s, double v) {
                   s.network.links.latency.b_us = v;
                   return result<bool>(true);
                 });
  ov.add<double>(app, "--bandwidth", "Link bandwidth in bytes per second (0 = unlimited)",
                 [](scenario& s, double v) {
                   s.network.links.bandwidth_bytes_per_s = v;
                   return result<bool>(true);
                 });
  ov.add<i64>(
      app, "--queue-bytes", "Per-link queue limit in bytes (tail drop)", [](scenario& s, i64 v) {
        return in_range("--queue-bytes", v, 1, i64{1} << 50, s.network.links.queue_bytes_max);
      });
  ov.add<double>(app, "--loss", "Message loss probability [0, 1]", [](scenario& s, double v) {
    s.network.links.loss_p = v;
    return result<bool>(true);
  });
  ov.add<double>(app, "--dup", "Message duplication probability [0, 1]", [](scenario& s, double v) {
    s.network.links.duplicate_p = v;
    return result<bool>(true);
  });
  std::vector<std::string> partitions, crashes, slows;
  app.add_option("--partition", partitions, "START_US:HEAL_US:N1,N2,..[:one-way] (repeatable)");
  app.add_option("--crash", crashes, "NODE:AT_US[:RESTART_US] (repeatable)");
  app.add_option("--slow", slows, "NODE:TICK_FACTOR[:PROCESSING_FACTOR] (repeatable)");
  ov.add<std::string>(app, "-w,--workload", "averaging (default), tracking or sgd",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto k = parse_workload(v);
                        if (!k) return k.error();
                        s.workload.kind = *k;
                        return true;
                      });
  ov.add<std::string>(app, "--problem", "sgd: least-squares or logistic",
                      [](scenario& s, const std::string& v) -> result<bool> {
                        auto k = parse_problem(v);
                        if (!k) return k.error();
                        s.workload.problem = *k;
                        return true;
                      });
  ov.add<double>(app, "--lr", "sgd: learning rate", [](scenario& s, double v) {
    s.workload.learning_rate = v;
    return result<bool>(true);
  });
  ov.add<i64>(app, "--update-every", "tracking / sgd: steps between local updates",
              [](scenario& s, i64 v) {
                return in_range("--update-every", v, 1, 1000000000, s.workload.update_every);
              });
  ov.add<double>(app, "--update-scale", "tracking: local updates uniform in [-scale, scale]",
                 [](scenario& s, double v) {
                   s.workload.update_scale = v;
                   return result<bool>(true);
                 });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (print_example) {
    std::fputs(cli::example_toml().c_str(), stdout);
    return 0;
  }

  auto error_exit = [](const failure& f) {
    std::fprintf(stderr, "mws-sim: %s\n", f.message.c_str());
    return 2;
  };
  scenario s = cli::default_scenario();
  if (!config_path.empty()) {
    auto loaded = cli::load_scenario_toml(config_path, s);
    if (!loaded) return error_exit(loaded.error());
    s = *loaded;
  }
  if (auto r = ov.apply(s); !r) return error_exit(r.error());
  if (plain_opt->count()) s.running_sums = !plain;
  if (wire_opt->count()) s.wire_faithful = wire;
  for (const auto& p : partitions) {
    auto v = cli::parse_partition_flag(p);
    if (!v) return error_exit(v.error());
    s.network.partitions.push_back(*v);
  }
  for (const auto& c : crashes) {
    auto v = cli::parse_crash_flag(c);
    if (!v) return error_exit(v.error());
    s.network.crashes.push_back(*v);
  }
  for (const auto& c : slows) {
    auto v = cli::parse_slow_flag(c);
    if (!v) return error_exit(v.error());
    s.network.slow.push_back(*v);
  }

  if (membership) return run_membership(s, quiet, settle_max_s, phase_s);

  const bool show_progress = !quiet && isatty(STDERR_FILENO);
  result<batched_output> out = fail(errc::bad_scenario, "not run");
  try {
    out = run_scenario(s, show_progress ? progress_fn(progress_bar{}) : progress_fn());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mws-sim: out of memory (reduce --nodes or --params)\n");
    return 2;
  }
  if (!out) return error_exit(out.error());
  print_summary(out->summary);
  if (!csv_path.empty()) {
    std::ofstream f(csv_path);
    write_csv(f, out->series);
    if (!f) {
      std::fprintf(stderr, "mws-sim: cannot write %s\n", csv_path.c_str());
      return 1;
    }
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    write_json(f, out->summary, out->series);
    if (!f) {
      std::fprintf(stderr, "mws-sim: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
