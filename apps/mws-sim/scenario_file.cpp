#include "apps/mws-sim/scenario_file.hpp"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include <toml++/toml.h>

namespace mws::sim::cli {
namespace {

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const auto at = text.find(sep, start);
    out.push_back(text.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  const auto* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return !s.empty() && ec == std::errc{} && ptr == end;
}

// Reads one TOML table with a fixed set of keys; collects the first error.
class reader {
 public:
  reader(const toml::table& t, std::string where, std::string source)
      : table_(t), where_(std::move(where)), source_(std::move(source)) {}

  bool check_keys(std::initializer_list<std::string_view> allowed) {
    std::set<std::string_view> ok(allowed);
    for (const auto& [key, node] : table_) {
      if (!ok.count(key.str())) {
        error_ = located(node, "unknown key '" + std::string(key.str()) + "' in " + where_);
        return false;
      }
    }
    return true;
  }

  template <class T>
  void get_int(std::string_view key, T& out, std::int64_t lo, std::int64_t hi) {
    const toml::node* n = table_.get(key);
    if (!n || !error_.empty()) return;
    const auto v = n->value_exact<std::int64_t>();
    if (!v) return set(*n, key, "must be an integer");
    if (*v < lo || *v > hi)
      return set(*n, key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    out = static_cast<T>(*v);
  }

  void get_double(std::string_view key, double& out, double lo, double hi) {
    const toml::node* n = table_.get(key);
    if (!n || !error_.empty()) return;
    std::optional<double> v = n->value_exact<double>();
    if (!v) {
      if (auto i = n->value_exact<std::int64_t>()) v = static_cast<double>(*i);
    }
    if (!v) return set(*n, key, "must be a number");
    if (!std::isfinite(*v) || *v < lo || *v > hi)
      return set(*n, key, "must be between " + fmt(lo) + " and " + fmt(hi));
    out = *v;
  }

  void get_bool(std::string_view key, bool& out) {
    const toml::node* n = table_.get(key);
    if (!n || !error_.empty()) return;
    const auto v = n->value_exact<bool>();
    if (!v) return set(*n, key, "must be true or false");
    out = *v;
  }

  void get_string(std::string_view key, std::string& out) {
    const toml::node* n = table_.get(key);
    if (!n || !error_.empty()) return;
    const auto v = n->value_exact<std::string>();
    if (!v) return set(*n, key, "must be a string");
    out = *v;
  }

  template <class T, class Parse>
  void get_enum(std::string_view key, T& out, Parse parse) {
    std::string name;
    get_string(key, name);
    if (name.empty() || !error_.empty()) return;
    auto r = parse(name);
    if (!r) return set(*table_.get(key), key, r.error().message);
    out = *r;
  }

  void get_nodes(std::string_view key, std::vector<node_id>& out) {
    const toml::node* n = table_.get(key);
    if (!n || !error_.empty()) return;
    const auto* arr = n->as_array();
    if (!arr) return set(*n, key, "must be an array of node ids");
    for (const auto& e : *arr) {
      const auto v = e.value_exact<std::int64_t>();
      if (!v || *v < 0 || *v >= (std::int64_t{1} << 26))
        return set(e, key, "must hold node ids (integers >= 0)");
      out.push_back(static_cast<node_id>(*v));
    }
  }

  void fail_with(std::string message) {
    if (error_.empty()) error_ = std::move(message);
  }
  const std::string& error() const noexcept { return error_; }

 private:
  static std::string fmt(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }
  std::string located(const toml::node& n, const std::string& what) const {
    const auto& src = n.source();
    return source_ + ":" + std::to_string(src.begin.line) + ": " + what;
  }
  void set(const toml::node& n, std::string_view key, const std::string& what) {
    if (error_.empty()) error_ = located(n, where_ + "." + std::string(key) + " " + what);
  }

  const toml::table& table_;
  std::string where_;
  std::string source_;
  std::string error_;
};

constexpr std::int64_t int_max = std::int64_t{1} << 40;

}  // namespace

result<scenario> parse_scenario_toml(std::string_view text, std::string_view source_name,
                                     scenario s) {
  const std::string source(source_name);
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    return fail(errc::bad_toml, source + ":" + std::to_string(e.source().begin.line) + ": " +
                                    std::string(e.description()));
  }
  auto table = [&](std::string_view name) -> const toml::table* {
    const toml::node* n = root.get(name);
    return n ? n->as_table() : nullptr;
  };

  reader top(root, "scenario", source);
  if (!top.check_keys({"seed", "mode", "device", "steps", "topology", "algorithm", "model", "time",
                       "network", "workload"}))
    return fail(errc::bad_toml, top.error());
  for (std::string_view name : {"topology", "algorithm", "model", "time", "network", "workload"})
    if (root.get(name) && !root.get(name)->is_table())
      return fail(errc::bad_toml, source + ": '" + std::string(name) + "' must be a table");
  top.get_int("seed", s.seed, 0, std::numeric_limits<std::int64_t>::max());
  top.get_enum("mode", s.mode, parse_mode);
  top.get_enum("device", s.device, parse_device);
  top.get_int("steps", s.steps, 1, 100000000);
  if (!top.error().empty()) return fail(errc::bad_toml, top.error());

  if (const auto* t = table("topology")) {
    reader r(*t, "topology", source);
    if (r.check_keys({"kind", "nodes", "degree", "edge_p", "rewire_p", "file"})) {
      r.get_enum("kind", s.topology.kind, parse_topology_kind);
      r.get_int("nodes", s.topology.nodes, 0, std::int64_t{1} << 26);
      r.get_int("degree", s.topology.degree, 1, 1 << 20);
      r.get_double("edge_p", s.topology.edge_p, 0.0, 1.0);
      r.get_double("rewire_p", s.topology.rewire_p, 0.0, 1.0);
      r.get_string("file", s.topology.file);
    }
    if (!r.error().empty()) return fail(errc::bad_toml, r.error());
  }
  if (const auto* t = table("algorithm")) {
    reader r(*t, "algorithm", source);
    if (r.check_keys({"name", "running_sums", "fanout", "staleness", "epochs", "wire"})) {
      r.get_enum("name", s.algo, parse_algorithm);
      r.get_bool("running_sums", s.running_sums);
      r.get_int("fanout", s.fanout, 1, 65536);
      r.get_int("staleness", s.staleness, 0, 1000);
      r.get_int("epochs", s.exact_epochs, 0, 1000000);
      r.get_bool("wire", s.wire_faithful);
    }
    if (!r.error().empty()) return fail(errc::bad_toml, r.error());
  }
  if (const auto* t = table("model")) {
    reader r(*t, "model", source);
    if (r.check_keys({"params"})) r.get_int("params", s.params, 1, std::int64_t{1} << 31);
    if (!r.error().empty()) return fail(errc::bad_toml, r.error());
  }
  if (const auto* t = table("time")) {
    reader r(*t, "time", source);
    if (r.check_keys({"step_us", "tick_us", "timeout_us", "sample_every"})) {
      r.get_int("step_us", s.step_us, 0, int_max);
      r.get_int("tick_us", s.tick_us, 1, int_max);
      r.get_int("timeout_us", s.timeout_us, 1, int_max);
      r.get_int("sample_every", s.sample_every, 1, 100000000);
    }
    if (!r.error().empty()) return fail(errc::bad_toml, r.error());
  }
  if (const auto* t = table("network")) {
    reader r(*t, "network", source);
    auto& l = s.network.links;
    if (r.check_keys({"latency", "latency_a_us", "latency_b_us", "bandwidth_bytes_per_s",
                      "queue_bytes", "loss", "duplicate", "partition", "crash", "slow"})) {
      r.get_enum("latency", l.latency.kind, parse_latency_kind);
      r.get_double("latency_a_us", l.latency.a_us, 0.0, 1e12);
      r.get_double("latency_b_us", l.latency.b_us, 0.0, 1e12);
      r.get_double("bandwidth_bytes_per_s", l.bandwidth_bytes_per_s, 0.0, 1e15);
      r.get_int("queue_bytes", l.queue_bytes_max, 1, std::int64_t{1} << 50);
      r.get_double("loss", l.loss_p, 0.0, 1.0);
      r.get_double("duplicate", l.duplicate_p, 0.0, 1.0);
    }
    if (!r.error().empty()) return fail(errc::bad_toml, r.error());
    auto each = [&](std::string_view key, auto&& one) -> result<bool> {
      const toml::node* n = t->get(key);
      if (!n) return true;
      const auto* arr = n->as_array();
      if (!arr || !arr->is_array_of_tables())
        return fail(errc::bad_toml, source + ": network." + std::string(key) +
                                        " must be an array of tables ([[network." +
                                        std::string(key) + "]])");
      for (const auto& e : *arr) {
        reader er(*e.as_table(), "network." + std::string(key), source);
        one(er);
        if (!er.error().empty()) return fail(errc::bad_toml, er.error());
      }
      return true;
    };
    if (auto ok = each("partition",
                       [&](reader& er) {
                         partition p;
                         if (!er.check_keys({"start_us", "heal_us", "nodes", "one_way"})) return;
                         er.get_int("start_us", p.start_us, 0, int_max);
                         er.get_int("heal_us", p.heal_us, 0, int_max);
                         er.get_nodes("nodes", p.side);
                         er.get_bool("one_way", p.one_way);
                         s.network.partitions.push_back(p);
                       });
        !ok)
      return ok.error();
    if (auto ok = each("crash",
                       [&](reader& er) {
                         crash c;
                         if (!er.check_keys({"node", "at_us", "restart_us"})) return;
                         er.get_int("node", c.node, 0, std::int64_t{1} << 26);
                         er.get_int("at_us", c.at_us, 0, int_max);
                         er.get_int("restart_us", c.restart_us, -1, int_max);
                         s.network.crashes.push_back(c);
                       });
        !ok)
      return ok.error();
    if (auto ok = each("slow",
                       [&](reader& er) {
                         slow_node sl;
                         if (!er.check_keys({"node", "tick_factor", "processing_factor"})) return;
                         er.get_int("node", sl.node, 0, std::int64_t{1} << 26);
                         er.get_double("tick_factor", sl.tick_factor, 1.0, 1e6);
                         er.get_double("processing_factor", sl.processing_factor, 1.0, 1e6);
                         s.network.slow.push_back(sl);
                       });
        !ok)
      return ok.error();
  }
  if (const auto* t = table("workload")) {
    reader r(*t, "workload", source);
    auto& w = s.workload;
    if (r.check_keys({"kind", "update_every", "update_scale", "problem", "samples_per_node",
                      "learning_rate", "heterogeneity"})) {
      r.get_enum("kind", w.kind, parse_workload);
      r.get_int("update_every", w.update_every, 1, 1000000000);
      r.get_double("update_scale", w.update_scale, 0.0, 1e30);
      r.get_enum("problem", w.problem, parse_problem);
      r.get_int("samples_per_node", w.samples_per_node, 1, 100000);
      r.get_double("learning_rate", w.learning_rate, 1e-300, 1e30);
      r.get_double("heterogeneity", w.heterogeneity, 0.0, 1e30);
    }
    if (!r.error().empty()) return fail(errc::bad_toml, r.error());
  }
  return s;
}

result<scenario> load_scenario_toml(const std::string& path, scenario base) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return fail(errc::unreadable_file, path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::unreadable_file, path + ": cannot open");
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > (1u << 24))
    return fail(errc::unreadable_file, path + ": larger than 16 MiB");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_scenario_toml(text.str(), path, std::move(base));
}

result<partition> parse_partition_flag(std::string_view text) {
  const auto bad = [&] {
    return fail(errc::bad_scenario, "--partition '" + std::string(text) +
                                        "': expected START_US:HEAL_US:N1,N2,...[:one-way]");
  };
  const auto parts = split(text, ':');
  if (parts.size() < 3 || parts.size() > 4) return bad();
  partition p;
  if (!parse_number(parts[0], p.start_us) || !parse_number(parts[1], p.heal_us)) return bad();
  for (auto n : split(parts[2], ',')) {
    node_id id = 0;
    if (!parse_number(n, id)) return bad();
    p.side.push_back(id);
  }
  if (parts.size() == 4) {
    if (parts[3] != "one-way") return bad();
    p.one_way = true;
  }
  return p;
}

result<crash> parse_crash_flag(std::string_view text) {
  const auto parts = split(text, ':');
  crash c;
  if (parts.size() < 2 || parts.size() > 3 || !parse_number(parts[0], c.node) ||
      !parse_number(parts[1], c.at_us) ||
      (parts.size() == 3 && !parse_number(parts[2], c.restart_us)))
    return fail(errc::bad_scenario,
                "--crash '" + std::string(text) + "': expected NODE:AT_US[:RESTART_US]");
  return c;
}

result<slow_node> parse_slow_flag(std::string_view text) {
  const auto parts = split(text, ':');
  slow_node s;
  auto number = [](std::string_view v, double& out) {
    try {
      std::size_t used = 0;
      out = std::stod(std::string(v), &used);
      return used == v.size();
    } catch (const std::exception&) {
      return false;
    }
  };
  if (parts.size() < 2 || parts.size() > 3 || !parse_number(parts[0], s.node) ||
      !number(parts[1], s.tick_factor) ||
      (parts.size() == 3 && !number(parts[2], s.processing_factor)))
    return fail(errc::bad_scenario, "--slow '" + std::string(text) +
                                        "': expected NODE:TICK_FACTOR[:PROCESSING_FACTOR]");
  return s;
}

scenario default_scenario() {
  scenario s;
  s.seed = 1;
  s.topology.kind = topology_kind::torus;
  s.topology.nodes = 64;
  s.algo = gossip::algorithm::sync;
  s.params = 256;
  s.steps = 60;
  s.network.links.latency = {latency_kind::uniform, 500.0, 1500.0};
  return s;
}

std::string example_toml() {
  return R"(# mws-sim scenario. Every key is optional; flags given on the command line win.
seed = 1
mode = "event"            # event | batched (sync rounds as sparse products, no faults)
device = "auto"           # batched mode: auto | cpu | cuda (same bits on each)
steps = 100               # steps of virtual time (batched: rounds)

[topology]
kind = "torus"            # complete ring torus hypercube random-regular erdos-renyi
                          # exponential small-world edge-list
nodes = 64
degree = 4                # random-regular, small-world
edge_p = 0.1              # erdos-renyi
rewire_p = 0.1            # small-world
# file = "edges.txt"      # edge-list: "a b" per line, optional first line "nodes N"

[algorithm]
name = "sync"             # push-sum pairwise sync exact
running_sums = true       # push-sum: false = plain push-sum (drifts under loss)
fanout = 1                # push-sum
staleness = 0             # sync: bound s (0 = bulk-synchronous)
epochs = 1                # exact
wire = false              # every message through the FlatBuffers codec

[model]
params = 256              # f32 values per node

[time]
step_us = 0               # 0 = typical latency + tick
tick_us = 1000
timeout_us = 5000
sample_every = 1

[network]
latency = "uniform"       # constant uniform normal lognormal
latency_a_us = 500        # constant value / min / mean / median
latency_b_us = 1500       # max / deviation / log-space sigma
bandwidth_bytes_per_s = 0 # 0 = unlimited
queue_bytes = 67108864    # per directed link, tail drop
loss = 0.0
duplicate = 0.0

# [[network.partition]]
# start_us = 10000
# heal_us = 30000
# nodes = [0, 1, 2, 3]
# one_way = false
# [[network.crash]]
# node = 5
# at_us = 20000
# restart_us = 40000      # -1 = never
# [[network.slow]]
# node = 7
# tick_factor = 4.0
# processing_factor = 1.0

[workload]
kind = "averaging"        # averaging tracking sgd
update_every = 1
update_scale = 0.01       # tracking
problem = "least-squares" # sgd: least-squares logistic
samples_per_node = 16
learning_rate = 0.1
heterogeneity = 1.0
)";
}

}  // namespace mws::sim::cli
