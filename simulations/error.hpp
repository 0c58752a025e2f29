// Errors of the simulator: a bad scenario, topology or input file. Scenario errors come from
// operators (flags, TOML, edge lists), so each carries a one-line message for the user beside
// its error_code.
#pragma once

#include <string>
#include <utility>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace mws::sim {

using boost::system::error_code;

enum class errc {
  ok = 0,
  bad_scenario = 1,  // a scenario value is out of range or inconsistent
  unknown_topology,  // the topology name is not one we build
  too_few_nodes,     // fewer than two nodes
  bad_topology,      // the topology cannot be built for this node count or is disconnected
  bad_edge_list,     // an edge-list file does not parse
  unreadable_file,   // a file cannot be opened or read
  bad_toml,          // a scenario file is not valid TOML or has unknown keys
  unsupported,       // the combination of options is not supported by this mode
};

const boost::system::error_category& sim_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), sim_category()};
}

// An error with the sentence the user sees ("edges.txt:7: node 12 out of range 0..9").
struct failure {
  error_code code;
  std::string message;
};

inline failure fail(errc e, std::string message) {
  return {make_error_code(e), std::move(message)};
}

// Lets result<T, failure>::value() throw a system_error carrying the message.
[[noreturn]] void throw_exception_from_error(const failure& f, const boost::source_location& where);

template <class T>
using result = boost::system::result<T, failure>;

}  // namespace mws::sim

template <>
struct boost::system::is_error_code_enum<mws::sim::errc> : std::true_type {};
