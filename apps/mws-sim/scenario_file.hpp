// Scenario input for mws-sim: TOML files and the compact flag forms of fault events. Every
// mistake becomes one clear sentence (file:line where TOML knows it), never an exception that
// escapes or a crash.
#pragma once

#include <string>
#include <string_view>

#include "simulations/scenario.hpp"

namespace mws::sim::cli {

// Applies a TOML scenario on top of `base`. Unknown tables or keys and values of the wrong type
// are errors (a typo must not silently fall back to a default).
result<scenario> parse_scenario_toml(std::string_view text, std::string_view source_name,
                                     scenario base);
result<scenario> load_scenario_toml(const std::string& path, scenario base);

// "START_US:HEAL_US:N1,N2,...[:one-way]"
result<partition> parse_partition_flag(std::string_view text);
// "NODE:AT_US[:RESTART_US]"
result<crash> parse_crash_flag(std::string_view text);
// "NODE:TICK_FACTOR[:PROCESSING_FACTOR]"
result<slow_node> parse_slow_flag(std::string_view text);

// The scenario mws-sim runs with no arguments: a 64-node torus under the sync algorithm with
// jittery latency, long enough to show the predicted and the measured contraction.
scenario default_scenario();

// A commented TOML file with every key, for --print-example.
std::string example_toml();

}  // namespace mws::sim::cli
