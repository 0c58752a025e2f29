// mws-bench sim: simulator throughput in node-updates x parameters per second, for the batched
// mode (sparse synchronous rounds) and the event mode (gossip/ sync state machines on the
// virtual network), held against the memory bandwidth measured in the same run (DESIGN.md
// section 9). Goals (issue 3): batched >= 0.5 of memory bandwidth; event mode runs 10,000 nodes
// x 10,000 params x 100 rounds in under a minute.
//
// Bytes per node-update x parameter: the batched mode must at least read and write every f32
// of X once per round, 8 bytes; the ratio column is (rate x 8 B) / (memory bandwidth). Where a
// CUDA GPU is usable, the batched mode runs there too ("batched-cuda"), held against a
// device-to-device copy measured in the same run.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/mws-bench/commands.hpp"
#include "simulations/batched.hpp"
#include "simulations/simulation.hpp"

namespace mws::bench {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct bandwidth {
  double memcpy_bytes_per_s = 0;  // counted as read + write
  double triad_bytes_per_s = 0;   // a = b + s c: two reads and a write
  double best() const { return std::max(memcpy_bytes_per_s, triad_bytes_per_s); }
};

// Best of `reps` over buffers far larger than the caches, single thread (the simulator is one).
bandwidth measure_bandwidth(std::size_t bytes, int reps) {
  const std::size_t n = bytes / sizeof(float);
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 3.0f);
  bandwidth bw;
  for (int r = 0; r < reps; ++r) {
    auto t0 = clock_type::now();
    std::memcpy(a.data(), b.data(), n * sizeof(float));
    bw.memcpy_bytes_per_s =
        std::max(bw.memcpy_bytes_per_s, 2.0 * static_cast<double>(bytes) / seconds_since(t0));
    const float s = 0.5f + static_cast<float>(r);
    t0 = clock_type::now();
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    for (std::size_t i = 0; i < n; ++i)
      pa[i] = pb[i] + s * pc[i];
    bw.triad_bytes_per_s =
        std::max(bw.triad_bytes_per_s, 3.0 * static_cast<double>(bytes) / seconds_since(t0));
  }
  volatile float sink = a[n / 2];  // keep the loops
  (void)sink;
  return bw;
}

struct row {
  std::string mode;
  std::uint32_t nodes = 0;
  std::size_t params = 0;
  std::uint64_t rounds = 0;
  double seconds = 0;
  double updates_per_s = 0;  // node-updates x parameters per second
  double ratio = 0;          // updates_per_s x 8 B / memory bandwidth
  double baseline = 0;       // that bandwidth, bytes per second
  std::string note;
};

sim::scenario torus_sync(std::uint32_t nodes, std::size_t params, std::uint64_t rounds) {
  sim::scenario s;
  s.seed = 1;
  s.topology.kind = sim::topology_kind::torus;
  s.topology.nodes = nodes;
  s.algo = gossip::algorithm::sync;
  s.params = params;
  s.steps = rounds;
  s.sample_every = rounds;  // metrics only at the start and the end
  s.network.links.latency = {sim::latency_kind::constant, 1000.0, 0.0};
  s.step_us = 1000;  // one round per step: every value arrives after exactly 1 ms
  s.tick_us = 1000000;
  s.timeout_us = 1000000;
  s.check_staleness = false;
  return s;
}

// Device-to-device copies of `bytes`, best of `reps`, counted as read + write.
double measure_device_bandwidth(gpu::backend& device, std::size_t bytes, int reps) {
  auto a = device.allocate(gpu::dtype::f32, bytes / sizeof(float), gpu::memory_space::device);
  auto b = device.allocate(gpu::dtype::f32, bytes / sizeof(float), gpu::memory_space::device);
  auto s = device.make_stream();
  if (!a || !b || !s) return 0.0;
  double best = 0.0;
  for (int r = 0; r <= reps; ++r) {  // the first copy warms up
    const auto t0 = clock_type::now();
    if (device.copy(**s, a->view(), b->view()) || (*s)->synchronize()) return 0.0;
    if (r > 0) best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t0));
  }
  return best;
}

row run_batched(gpu::backend& device, std::uint32_t nodes, std::size_t params, double bw) {
  row r;
  const bool on_cpu = device.name() == "cpu";
  r.mode = on_cpu ? "batched" : "batched-" + std::string(device.name());
  r.nodes = nodes;
  r.params = params;
  sim::rng random(1);
  sim::topology_spec spec;
  spec.kind = sim::topology_kind::torus;
  spec.nodes = nodes;
  auto g = sim::make_topology(spec, random);
  auto made = sim::batched_sync::create(device, sim::metropolis_hastings(*g), params);
  if (!made) {
    r.note = made.error().message;
    return r;
  }
  sim::batched_sync& b = *made;
  std::vector<float> x(params);
  for (sim::node_id i = 0; i < nodes; ++i) {
    for (auto& v : x)
      v = static_cast<float>(random.uniform01());
    b.load(i, x);
  }
  if (auto ec = b.round()) {  // warm-up: page faults, caches
    r.note = ec.message();
    return r;
  }
  const double work = static_cast<double>(nodes) * static_cast<double>(params);
  r.rounds = std::max<std::uint64_t>(3, static_cast<std::uint64_t>((on_cpu ? 4e9 : 4e11) / work));
  r.rounds = std::min<std::uint64_t>(r.rounds, 200);
  const auto t0 = clock_type::now();
  for (std::uint64_t k = 0; k < r.rounds; ++k)
    (void)b.round();  // the warm-up round succeeded
  r.seconds = seconds_since(t0);
  r.updates_per_s = work * static_cast<double>(r.rounds) / r.seconds;
  r.ratio = r.updates_per_s * 8.0 / bw;
  r.baseline = bw;
  r.note = "block " + std::to_string(b.block());
  return r;
}

row run_event(std::uint32_t nodes, std::size_t params, std::uint64_t rounds, double bw) {
  row r;
  r.mode = "event";
  r.nodes = nodes;
  r.params = params;
  r.rounds = rounds;
  auto sim = sim::event_simulation::create(torus_sync(nodes, params, rounds));
  if (!sim) {
    r.note = sim.error().message;
    return r;
  }
  const auto t0 = clock_type::now();
  const auto summary = (*sim)->run();
  r.seconds = seconds_since(t0);
  const double done = summary.last.round_mean;
  r.updates_per_s = static_cast<double>(nodes) * static_cast<double>(params) * done / r.seconds;
  r.ratio = r.updates_per_s * 8.0 / bw;
  r.baseline = bw;
  char note[96];
  std::snprintf(note, sizeof note, "%.0f rounds, trace %s", done,
                sim::hex64(summary.trace_hash).c_str());
  r.note = note;
  return r;
}

std::string today_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

void add_sim_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "sim",
      "Simulator throughput (node-updates x params / s), batched and event mode, "
      "against memory bandwidth");
  struct options {
    std::string json;
    double memory_gib = 4.0;
    bool quick = false;
    bool skip_goal = false;
    std::string only;
  };
  auto opt = std::make_shared<options>();
  cmd->add_option("--json", opt->json, "Write the results as JSON to this file");
  cmd->add_option("--memory-gib", opt->memory_gib,
                  "Largest simulated state to allocate per case, GiB (default 4)");
  cmd->add_flag("--quick", opt->quick, "Small cases only (a smoke test)");
  cmd->add_option("--only", opt->only, "Run only one mode: batched or event")
      ->check(CLI::IsMember({"batched", "event"}));
  cmd->add_flag("--skip-goal", opt->skip_goal,
                "Skip the 10,000 x 10,000 x 100-round event-mode goal run");
  cmd->callback([opt] {
    const std::size_t buffer_bytes =
        opt->quick ? (std::size_t{64} << 20) : (std::size_t{512} << 20);
    const bandwidth bw = measure_bandwidth(buffer_bytes, opt->quick ? 2 : 5);
    std::printf("memory bandwidth (1 thread, %zu MiB buffers): memcpy %.2f GB/s, triad %.2f GB/s\n",
                buffer_bytes >> 20, bw.memcpy_bytes_per_s / 1e9, bw.triad_bytes_per_s / 1e9);
    const double max_values = opt->memory_gib * static_cast<double>(std::size_t{1} << 30) / 4.0;
    std::vector<row> rows;
    const std::vector<std::uint32_t> node_counts =
        opt->quick ? std::vector<std::uint32_t>{1000}
                   : std::vector<std::uint32_t>{1000, 10000, 100000};
    const std::vector<std::size_t> param_counts =
        opt->quick ? std::vector<std::size_t>{1000}
                   : std::vector<std::size_t>{1000, 10000, 100000, 1000000};
    const bool batched = opt->only.empty() || opt->only == "batched";
    const bool event = opt->only.empty() || opt->only == "event";
    const auto cpu = gpu::make_cpu_backend();
    std::printf("batched mode on the %s\n", cpu->description().c_str());
    for (auto n : node_counts)
      for (auto p : param_counts) {
        const double values = static_cast<double>(n) * static_cast<double>(p);
        if (!batched || values > max_values) continue;
        // The baseline once more just before each case: on a shared machine the load drifts.
        const double near = std::max(bw.best(), measure_bandwidth(buffer_bytes / 2, 2).best());
        rows.push_back(run_batched(*cpu, n, p, near));
        std::fprintf(stderr, "batched %u x %zu done\n", n, p);
      }
    // The GPU holds X twice (whole rows, double-buffered); a copy of 1 GiB is its baseline.
    double device_bw = 0.0;
    const auto cuda = batched ? gpu::make_backend(gpu::backend_choice::cuda)
                              : gpu::backend_selection{nullptr, "not asked for"};
    if (cuda.chosen) device_bw = measure_device_bandwidth(*cuda.chosen, std::size_t{1} << 30, 5);
    if (device_bw > 0.0) {
      std::printf("batched mode on %s; device-to-device copy %.1f GB/s\n", cuda.reason.c_str(),
                  device_bw / 1e9);
      for (auto n : node_counts)
        for (auto p : param_counts) {
          const double values = static_cast<double>(n) * static_cast<double>(p);
          if (2.0 * values > 4.0 * max_values) continue;
          rows.push_back(run_batched(*cuda.chosen, n, p, device_bw));
          std::fprintf(stderr, "batched-cuda %u x %zu done\n", n, p);
        }
    } else if (batched) {
      std::printf("no batched rows on a GPU: %s\n", cuda.reason.c_str());
    }
    // The event mode holds x, a snapshot per round and the neighbours' values: about 3 copies.
    for (auto n : node_counts)
      for (auto p : param_counts) {
        const double values = static_cast<double>(n) * static_cast<double>(p);
        if (!event || 3.0 * values > max_values || values > 2e8) continue;
        const auto rounds = static_cast<std::uint64_t>(std::clamp(2e9 / values, 3.0, 100.0));
        rows.push_back(run_event(n, p, rounds, bw.best()));
        std::fprintf(stderr, "event %u x %zu done\n", n, p);
      }
    if (event && !opt->quick && !opt->skip_goal) {
      rows.push_back(run_event(10000, 10000, 100, bw.best()));
      rows.back().mode = "event-goal";
    }

    std::printf("\n%-12s %8s %9s %7s %9s %14s %9s %7s  %s\n", "mode", "nodes", "params", "rounds",
                "seconds", "upd*param/s", "BW GB/s", "xBW", "note");
    for (const auto& r : rows)
      std::printf("%-12s %8u %9zu %7" PRIu64 " %9.3f %14.4g %9.1f %7.3f  %s\n", r.mode.c_str(),
                  r.nodes, r.params, r.rounds, r.seconds, r.updates_per_s, r.baseline / 1e9,
                  r.ratio, r.note.c_str());
    std::printf(
        "xBW = rate x 8 bytes (one f32 read + one write per node-update x param) / BW: batched,\n"
        "the best of memcpy and triad (1 thread) at the start and just before the case; "
        "batched-cuda, a device-to-device copy; event, the start's\n");
    if (!opt->json.empty()) {
      std::ofstream out(opt->json);
      out << "{\n  \"benchmark\": \"sim\", \"date\": \"" << today_utc() << "\",\n"
          << "  \"memcpy_bytes_per_s\": " << bw.memcpy_bytes_per_s
          << ", \"triad_bytes_per_s\": " << bw.triad_bytes_per_s
          << ", \"device_copy_bytes_per_s\": " << device_bw << ",\n  \"rows\": [\n";
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        out << "    {\"mode\": \"" << r.mode << "\", \"nodes\": " << r.nodes
            << ", \"params\": " << r.params << ", \"rounds\": " << r.rounds
            << ", \"seconds\": " << r.seconds << ", \"updates_params_per_s\": " << r.updates_per_s
            << ", \"ratio_to_bandwidth\": " << r.ratio
            << ", \"bandwidth_bytes_per_s\": " << r.baseline << ", \"note\": \"" << r.note << "\"}"
            << (i + 1 < rows.size() ? ",\n" : "\n");
      }
      out << "  ]\n}\n";
      if (!out) throw std::runtime_error("cannot write " + opt->json);
    }
  });
}

}  // namespace mws::bench
