#include "simulations/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace mws::sim {

double measured_contraction(const std::vector<sample>& series, bool per_round, double floor_ratio) {
  if (series.size() < 4) return 0.0;
  const double d0 = series.front().distance_rms;
  if (!(d0 > 0.0)) return 0.0;
  const std::size_t first = series.size() / 5;
  std::size_t last = first;
  for (std::size_t i = first; i < series.size(); ++i)
    if (series[i].distance_rms > floor_ratio * d0) last = i;
  if (last <= first) return 0.0;
  const auto& a = series[first];
  const auto& b = series[last];
  const double span =
      per_round ? b.round_mean - a.round_mean : static_cast<double>(b.step - a.step);
  if (!(span > 0.0) || !(a.distance_rms > 0.0) || !(b.distance_rms > 0.0)) return 0.0;
  return std::pow(b.distance_rms / a.distance_rms, 1.0 / span);
}

std::string hex64(std::uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

void sample_fields(std::ostream& out, const sample& s, const char* sep) {
  out << s.step << sep << s.time_us << sep << num(s.round_mean) << sep << num(s.distance_rms) << sep
      << num(s.max_relative_error) << sep << num(s.mass_drift_x) << sep << num(s.mass_drift_w)
      << sep << s.messages << sep << s.bytes << sep << s.round_gap << sep << s.staleness_used << sep
      << num(s.loss);
}

constexpr const char* columns[] = {
    "step",         "time_us",  "round_mean", "distance_rms", "max_rel_error",  "mass_drift_x",
    "mass_drift_w", "messages", "bytes",      "round_gap",    "staleness_used", "loss"};

}  // namespace

void write_csv(std::ostream& out, const std::vector<sample>& series) {
  bool first = true;
  for (const char* c : columns) {
    out << (first ? "" : ",") << c;
    first = false;
  }
  out << '\n';
  for (const auto& s : series) {
    sample_fields(out, s, ",");
    out << '\n';
  }
}

void write_json(std::ostream& out, const run_summary& r, const std::vector<sample>& series) {
  out << "{\n  \"mode\": " << quoted(r.mode) << ", \"algorithm\": " << quoted(r.algorithm)
      << ", \"topology\": " << quoted(r.topology) << ", \"workload\": " << quoted(r.workload)
      << ",\n  \"seed\": " << r.seed << ", \"nodes\": " << r.nodes << ", \"params\": " << r.params
      << ", \"steps\": " << r.steps
      << ",\n  \"predicted_contraction\": " << num(r.predicted_contraction)
      << ", \"measured_contraction\": " << num(r.measured_contraction)
      << ", \"contraction_unit\": " << quoted(r.contraction_unit)
      << ", \"device\": " << quoted(r.device)
      << ",\n  \"trace_hash\": " << quoted(hex64(r.trace_hash)) << ", \"events\": " << r.events
      << ", \"staleness_violations\": " << r.staleness_violations << ", \"refused\": " << r.refused
      << ",\n  \"lost\": " << r.lost << ", \"duplicated\": " << r.duplicated
      << ", \"cut\": " << r.cut << ", \"queue_drops\": " << r.queue_drops
      << ", \"to_down_node\": " << r.to_down_node << ", \"wall_s\": " << num(r.wall_s)
      << ",\n  \"columns\": [";
  bool first = true;
  for (const char* c : columns) {
    out << (first ? "" : ", ") << '"' << c << '"';
    first = false;
  }
  out << "],\n  \"series\": [";
  for (std::size_t i = 0; i < series.size(); ++i) {
    out << (i ? ",\n    [" : "\n    [");
    sample_fields(out, series[i], ", ");
    out << ']';
  }
  out << "\n  ]\n}\n";
}

}  // namespace mws::sim
