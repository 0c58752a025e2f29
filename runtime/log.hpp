// JSON-lines logging for a node: one object per line with the time, level, event name and
// fields, so operators can grep, jq or ship the lines without a parser for prose.
//
//   {"ts":"2026-12-01T19:30:00.123Z","level":"info","event":"peer_joined","peer":"3fa2...","node":"9c1e..."}
//
// A logger writes whole lines with one write() each, so lines of several nodes (or threads)
// sharing a file never interleave. The sink is replaceable (tests capture lines).
#pragma once

#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace mws::runtime {

enum class log_level { debug = 0, info = 1, warn = 2, error = 3 };

using log_field = std::pair<std::string_view, std::string>;

class logger {
 public:
  using sink = std::function<void(std::string_view line)>;  // the line ends in '\n'

  // Writes to standard error by default.
  explicit logger(log_level min = log_level::info, sink out = {});

  // Adds a field to every line (the node's id, say).
  void set_context(std::string_view key, std::string value);
  void log(log_level level, std::string_view event, std::initializer_list<log_field> fields = {});
  bool enabled(log_level level) const noexcept { return level >= min_; }

 private:
  log_level min_;
  sink out_;
  std::string context_;  // ,"key":"value" pairs, already escaped
};

}  // namespace mws::runtime
