// Counters and gauges of a node, rendered in the Prometheus text format (version 0.0.4).
//
// Names follow Prometheus conventions: the mws_ prefix, base units (bytes, seconds), counters
// ending in _total. A metric family is registered once with its help text; a series within it
// is picked by a label set ({"reason", "bad_psk"}). The registry belongs to the node's event
// loop and is not thread-safe; other threads read metrics through the loop.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mws::runtime {

using label_set = std::vector<std::pair<std::string, std::string>>;

class metrics_registry {
 public:
  enum class kind { counter, gauge };

  // Adds `delta` (>= 0) to a counter series, creating family and series on first use.
  void add(std::string_view family, double delta, const label_set& labels = {});
  // Sets a gauge series.
  void set(std::string_view family, double value, const label_set& labels = {});
  // The current value of a series, 0 if it does not exist.
  double value(std::string_view family, const label_set& labels = {}) const;

  // Declares a family. Families must be declared before add/set, so that every metric has its
  // help text and type (a programmer error otherwise).
  void declare(std::string name, kind k, std::string help);

  std::string render() const;

 private:
  struct family {
    kind type;
    std::string help;
    std::map<label_set, double> series;
  };
  family& find(std::string_view name, kind expected);
  std::map<std::string, family, std::less<>> families_;
};

}  // namespace mws::runtime
