// mws-bench mix: throughput of the k-way weighted sum (the mixing step) as a fraction of a copy
// baseline measured in the same run (memcpy on the CPU, device-to-device copy on a GPU), and,
// on the CPU, against the same weighted sum written with torch.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/mws-bench/commands.hpp"
#include "apps/mws-bench/report.hpp"
#include "gpu/backend.hpp"

namespace mws::bench {
namespace {

using gpu::backend;
using gpu::buffer;
using gpu::dtype;

struct mix_options {
  std::string backend_name = "auto";
  std::vector<std::size_t> k_values = {2, 4, 8};
  std::vector<std::size_t> sizes_mib = {64, 256, 1024};
  std::vector<std::string> dtypes = {"f32", "bf16"};
  int repeats = 5;
  bool torch = true;
  std::string python = "/usr/bin/python3";
  std::string torch_script = "scripts/bench_torch_mix.py";
  std::string json_path;
};

struct mix_result {
  dtype type;
  std::size_t mib;
  std::size_t k;
  double mix_gbps;   // (k reads + 1 write) bytes per second / 1e9
  double copy_gbps;  // (1 read + 1 write) bytes per second / 1e9
  double torch_gbps = 0;
};

void check(gpu::error_code ec, const char* what) {
  if (ec) throw std::runtime_error(std::string(what) + ": " + ec.message());
}

// Seconds per call of `op`, the median over `repeats` timings of enough back-to-back calls to
// last about 50 ms (so launch and synchronisation overheads stay out of the figure).
template <class Op>
double seconds_per_call(gpu::stream& s, int repeats, Op&& op) {
  check(op(), "warm-up");
  check(s.synchronize(), "synchronize");
  auto t0 = std::chrono::steady_clock::now();
  check(op(), "probe");
  check(s.synchronize(), "synchronize");
  const double probe = std::max(seconds_since(t0), 1e-7);
  const int calls = static_cast<int>(std::clamp(0.05 / probe, 1.0, 1000.0));
  std::vector<double> sample;
  for (int r = 0; r < repeats; ++r) {
    t0 = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c)
      check(op(), "operation");
    check(s.synchronize(), "synchronize");
    sample.push_back(seconds_since(t0) / calls);
  }
  return median(sample);
}

// Measures every k for one dtype and buffer size; buffers are allocated once for the largest k.
void measure_size(backend& b, gpu::stream& s, const mix_options& o, dtype t, std::size_t mib,
                  std::vector<mix_result>& results) {
  const std::size_t bytes = mib << 20;
  const std::size_t numel = bytes / gpu::dtype_size(t);
  const std::size_t k_max = *std::max_element(o.k_values.begin(), o.k_values.end());
  // Inputs hold small values so nothing overflows; contents do not change the speed.
  auto host = b.allocate(dtype::f32, numel, gpu::memory_space::host).value();
  auto* h = static_cast<float*>(host.data());
  for (std::size_t i = 0; i < numel; ++i)
    h[i] = static_cast<float>(i % 251) * 0.01f;
  auto allocate = [&](dtype type) {
    auto buf = b.allocate(type, numel, gpu::memory_space::device);
    if (!buf)
      throw std::runtime_error("cannot allocate " + std::to_string(mib) + " MiB on " +
                               std::string(b.name()));
    return std::move(*buf);
  };
  buffer staging = allocate(dtype::f32);
  check(b.copy(s, staging.view(), host.view()), "upload");
  std::vector<buffer> x;
  for (std::size_t j = 0; j < k_max; ++j) {
    x.push_back(allocate(t));
    check(b.convert(s, x.back().view(), staging.view()), "fill");
  }
  buffer out = allocate(t);
  check(b.copy(s, out.view(), x[0].view()), "fill");
  check(s.synchronize(), "synchronize");
  host = buffer();
  staging = buffer();

  for (std::size_t k : o.k_values) {
    std::vector<gpu::weighted_term> terms;
    for (std::size_t j = 0; j < k; ++j)
      terms.push_back({x[j].view(), 1.0f / static_cast<float>(k)});
    const double copy_s =
        seconds_per_call(s, o.repeats, [&] { return b.copy(s, out.view(), x[0].view()); });
    const double mix_s =
        seconds_per_call(s, o.repeats, [&] { return b.weighted_sum(s, out.view(), terms); });
    results.push_back({t, mib, k, static_cast<double>((k + 1) * bytes) / mix_s / 1e9,
                       static_cast<double>(2 * bytes) / copy_s / 1e9});
    std::cerr << "  " << gpu::to_string(t) << " " << mib << " MiB k=" << k << " done\n";
  }
}

// Runs the torch script over the same configurations; returns GB/s per result, or an empty
// vector with a note on stderr when torch is not available.
void measure_torch(const mix_options& o, std::vector<mix_result>& results) {
  std::ostringstream cmd;
  cmd << o.python << ' ' << o.torch_script << " --repeats " << o.repeats;
  for (const auto& r : results)
    cmd << ' ' << gpu::to_string(r.type) << ':' << r.mib << ':' << r.k;
  FILE* pipe = popen(cmd.str().c_str(), "r");
  if (pipe == nullptr) {
    std::cerr << "torch: cannot start " << o.python << "\n";
    return;
  }
  std::string text;
  std::array<char, 4096> chunk;
  while (std::size_t n = std::fread(chunk.data(), 1, chunk.size(), pipe))
    text.append(chunk.data(), n);
  if (pclose(pipe) != 0) {
    std::cerr << "torch: comparison skipped (" << o.python << " " << o.torch_script
              << " failed; `scripts/setup --bench` installs python3-torch)\n";
    return;
  }
  const auto doc = boost::json::parse(text).as_object();
  const auto& rows = doc.at("results").as_array();
  for (std::size_t i = 0; i < rows.size() && i < results.size(); ++i) {
    results[i].torch_gbps = rows[i].at("gbps").to_number<double>();
  }
}

void run_mix(const mix_options& o) {
  const auto choice = o.backend_name == "cpu"    ? gpu::backend_choice::cpu
                      : o.backend_name == "cuda" ? gpu::backend_choice::cuda
                                                 : gpu::backend_choice::automatic;
  auto selection = gpu::make_backend(choice);
  if (!selection.chosen) throw std::runtime_error(selection.reason);
  backend& b = *selection.chosen;
  std::cerr << "backend: " << b.name() << " (" << selection.reason << ")\n"
            << "  " << b.description() << "\n";
  auto s = b.make_stream().value();

  std::vector<mix_result> results;
  for (const auto& name : o.dtypes) {
    const auto t = gpu::parse_dtype(name);
    if (!t) throw std::runtime_error("unknown dtype '" + name + "' (use f32, f16 or bf16)");
    for (std::size_t mib : o.sizes_mib)
      measure_size(b, *s, o, *t, mib, results);
  }
  const bool on_cpu = b.name() == "cpu";
  if (on_cpu && o.torch) measure_torch(o, results);

  table tab({"dtype", "MiB/buffer", "k", "mix GB/s", "copy GB/s", "mix/copy",
             on_cpu ? "torch GB/s" : "", on_cpu ? "mix/torch" : ""});
  boost::json::array rows;
  double worst_ratio = 1e9, worst_vs_torch = 1e9;
  for (const auto& r : results) {
    const double ratio = r.mix_gbps / r.copy_gbps;
    worst_ratio = std::min(worst_ratio, ratio);
    std::vector<std::string> cells = {std::string(gpu::to_string(r.type)),
                                      std::to_string(r.mib),
                                      std::to_string(r.k),
                                      fixed(r.mix_gbps),
                                      fixed(r.copy_gbps),
                                      fixed(ratio)};
    boost::json::object row{
        {"dtype", gpu::to_string(r.type)}, {"mib_per_buffer", r.mib},  {"k", r.k},
        {"mix_gbps", r.mix_gbps},          {"copy_gbps", r.copy_gbps}, {"mix_over_copy", ratio}};
    if (r.torch_gbps > 0) {
      worst_vs_torch = std::min(worst_vs_torch, r.mix_gbps / r.torch_gbps);
      cells.push_back(fixed(r.torch_gbps));
      cells.push_back(fixed(r.mix_gbps / r.torch_gbps));
      row["torch_gbps"] = r.torch_gbps;
      row["mix_over_torch"] = r.mix_gbps / r.torch_gbps;
    }
    tab.add_row(std::move(cells));
    rows.push_back(std::move(row));
  }
  std::cout << "\nk-way weighted sum on " << b.description() << "\n"
            << "GB/s count k reads + 1 write for mix, 1 read + 1 write for copy ("
            << (on_cpu ? "memcpy" : "device-to-device copy") << "); medians of " << o.repeats
            << " timings\n\n";
  tab.print();
  const double goal = on_cpu ? 0.85 : 0.9;
  std::cout << "\nworst mix/copy " << fixed(worst_ratio) << " (goal >= " << fixed(goal) << ")";
  if (worst_vs_torch < 1e9)
    std::cout << ", worst mix/torch " << fixed(worst_vs_torch) << " (goal > 1)";
  std::cout << "\n";

  if (!o.json_path.empty()) {
    boost::json::object doc{{"benchmark", "mix"},
                            {"machine", machine_facts()},
                            {"backend", b.name()},
                            {"backend_description", b.description()},
                            {"backend_reason", selection.reason},
                            {"repeats", o.repeats},
                            {"results", std::move(rows)},
                            {"worst_mix_over_copy", worst_ratio},
                            {"goal_mix_over_copy", goal}};
    if (worst_vs_torch < 1e9) doc["worst_mix_over_torch"] = worst_vs_torch;
    write_json(doc, o.json_path);
  }
}

}  // namespace

void add_mix_command(CLI::App& app) {
  auto o = std::make_shared<mix_options>();
  auto* cmd = app.add_subcommand(
      "mix", "Throughput of the k-way weighted sum against a copy baseline and torch");
  cmd->add_option("--backend", o->backend_name, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("-k", o->k_values, "Numbers of inputs per weighted sum (1..16)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd->add_option("--size-mib", o->sizes_mib, "Buffer sizes in MiB")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd->add_option("--dtype", o->dtypes, "Storage types: f32, f16, bf16")->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "Timings per figure (the median is reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("!--no-torch", o->torch, "Skip the torch comparison");
  cmd->add_option("--python", o->python, "Python interpreter with torch")->capture_default_str();
  cmd->add_option("--torch-script", o->torch_script, "The torch side of the comparison")
      ->capture_default_str();
  cmd->add_option("--json", o->json_path,
                  "Also write the results as JSON to this file (- = stdout)");
  cmd->callback([o] { run_mix(*o); });
}

}  // namespace mws::bench
