#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "apps/mws-bench/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "mws-bench: benchmarks of mws, each against a baseline measured in the same run.\n"
      "Run a subcommand with --help for its options."};
  app.require_subcommand(1);
  mws::bench::add_mix_command(app);
  mws::bench::add_sim_command(app);
  mws::bench::add_transport_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mws-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
