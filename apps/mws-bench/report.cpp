#include "apps/mws-bench/report.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace mws::bench {

void table::print() const {
  std::vector<std::size_t> width(headers_.size());
  for (std::size_t c = 0; c < headers_.size(); ++c)
    width[c] = headers_[c].size();
  for (const auto& row : rows_) {
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t c = 0; c < width.size(); ++c) {
      const std::string& cell = c < cells.size() ? cells[c] : std::string();
      out += std::string(width[c] - cell.size(), ' ') + cell + (c + 1 < width.size() ? "  " : "");
    }
    std::cout << out << '\n';
  };
  line(headers_);
  std::size_t total = 0;
  for (auto w : width)
    total += w + 2;
  std::cout << std::string(total - 2, '-') << '\n';
  for (const auto& row : rows_)
    line(row);
  std::cout.flush();
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(digits);
  s << v;
  return s.str();
}

void write_json(const boost::json::value& doc, const std::string& path) {
  const std::string text = boost::json::serialize(doc) + "\n";
  if (path == "-") {
    std::cout << text;
    return;
  }
  std::ofstream f(path);
  if (!(f << text)) throw std::runtime_error("cannot write " + path);
}

boost::json::object machine_facts() {
  boost::json::object m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      m["cpu"] = line.substr(line.find(':') + 2);
      break;
    }
  }
  m["cores"] = std::thread::hardware_concurrency();
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t kib = 0;
  if (meminfo >> key >> kib) m["memory_gib"] = static_cast<double>(kib) / (1024.0 * 1024.0);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  m["date"] = date;
  return m;
}

double median(std::vector<double>& sample) {
  std::sort(sample.begin(), sample.end());
  const std::size_t n = sample.size();
  return n % 2 ? sample[n / 2] : 0.5 * (sample[n / 2 - 1] + sample[n / 2]);
}

}  // namespace mws::bench
