// What every benchmark prints: an aligned table on stdout and, on request, the same figures as
// JSON in a file. Also the timing helpers they share.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <boost/json.hpp>

namespace mws::bench {

class table {
 public:
  explicit table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void add_row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "12.34" with `digits` decimals.
std::string fixed(double v, int digits = 2);

// Writes `doc` to `path` (pretty enough to read, one key per line); "-" means stdout.
void write_json(const boost::json::value& doc, const std::string& path);

// Machine facts for the record: CPU model, core count, memory, date (UTC).
boost::json::object machine_facts();

// Median of a non-empty sample (the sample is reordered).
double median(std::vector<double>& sample);

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace mws::bench
