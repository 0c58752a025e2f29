#include "runtime/log.hpp"

#include <unistd.h>

#include <chrono>
#include <ctime>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

namespace mws::runtime {
namespace {

void append_field(std::string& out, std::string_view key, std::string_view value) {
  out += ',';
  out += boost::json::serialize(boost::json::string(key));
  out += ':';
  out += boost::json::serialize(boost::json::string(value));
}

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

constexpr std::string_view level_name(log_level l) {
  switch (l) {
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warn:
      return "warn";
    case log_level::error:
      return "error";
  }
  return "info";
}

void write_stderr(std::string_view line) {
  // One write per line: lines from processes sharing the file do not interleave.
  while (!line.empty()) {
    const auto n = ::write(2, line.data(), line.size());
    if (n <= 0) return;
    line.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

logger::logger(log_level min, sink out) : min_(min), out_(out ? std::move(out) : write_stderr) {}

void logger::set_context(std::string_view key, std::string value) {
  append_field(context_, key, value);
}

void logger::log(log_level level, std::string_view event, std::initializer_list<log_field> fields) {
  if (!enabled(level)) return;
  std::string line = "{\"ts\":\"" + utc_now() + "\"";
  append_field(line, "level", level_name(level));
  append_field(line, "event", event);
  line += context_;
  for (const auto& [k, v] : fields)
    append_field(line, k, v);
  line += "}\n";
  out_(line);
}

}  // namespace mws::runtime
