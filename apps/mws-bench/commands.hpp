// mws-bench: one CLI11 subcommand per benchmark, each in its own file. A benchmark measures its
// baseline in the same run and prints a table (stdout) and, with --json FILE, the same figures
// as JSON (DESIGN.md section 9).
#pragma once

#include <CLI/CLI.hpp>

namespace mws::bench {

void add_mix_command(CLI::App& app);
void add_sim_command(CLI::App& app);
void add_transport_command(CLI::App& app);

}  // namespace mws::bench
