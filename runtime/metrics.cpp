#include "runtime/metrics.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace mws::runtime {
namespace {

// Escapes a label value as the text format requires: backslash, double quote, newline.
std::string escape(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

void metrics_registry::declare(std::string name, kind k, std::string help) {
  families_.try_emplace(std::move(name), family{k, std::move(help), {}});
}

metrics_registry::family& metrics_registry::find(std::string_view name, kind expected) {
  auto it = families_.find(name);
  if (it == families_.end() || it->second.type != expected) {
    throw std::logic_error("metric " + std::string(name) + " used before it was declared");
  }
  return it->second;
}

void metrics_registry::add(std::string_view name, double delta, const label_set& labels) {
  find(name, kind::counter).series[labels] += delta;
}

void metrics_registry::set(std::string_view name, double v, const label_set& labels) {
  find(name, kind::gauge).series[labels] = v;
}

double metrics_registry::value(std::string_view name, const label_set& labels) const {
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  auto s = it->second.series.find(labels);
  return s == it->second.series.end() ? 0 : s->second;
}

std::string metrics_registry::render() const {
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + (f.type == kind::counter ? " counter\n" : " gauge\n");
    // A declared family with no series yet shows as zero, so dashboards see it from the start.
    if (f.series.empty()) out += name + " 0\n";
    for (const auto& [labels, v] : f.series) {
      out += name;
      if (!labels.empty()) {
        out += '{';
        for (std::size_t i = 0; i < labels.size(); ++i) {
          out += (i ? "," : "") + labels[i].first + "=\"" + escape(labels[i].second) + "\"";
        }
        out += '}';
      }
      out += " " + number(v) + "\n";
    }
  }
  return out;
}

}  // namespace mws::runtime
