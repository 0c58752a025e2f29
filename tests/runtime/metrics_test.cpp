#include "runtime/metrics.hpp"

#include <stdexcept>

#include <doctest/doctest.h>

namespace mws::runtime {
namespace {

TEST_CASE("metrics render in the Prometheus text format with help, type and labels") {
  metrics_registry m;
  m.declare("mws_peers", metrics_registry::kind::gauge, "Peers connected now.");
  m.declare("mws_handshake_failures_total", metrics_registry::kind::counter,
            "Handshakes refused, by reason.");
  m.set("mws_peers", 3);
  m.add("mws_handshake_failures_total", 1, {{"reason", "bad_psk"}});
  m.add("mws_handshake_failures_total", 2, {{"reason", "bad_psk"}});
  m.add("mws_handshake_failures_total", 1, {{"reason", "say \"hi\"\n"}});
  CHECK(m.value("mws_handshake_failures_total", {{"reason", "bad_psk"}}) == 3);
  CHECK(m.render() ==
        "# HELP mws_handshake_failures_total Handshakes refused, by reason.\n"
        "# TYPE mws_handshake_failures_total counter\n"
        "mws_handshake_failures_total{reason=\"bad_psk\"} 3\n"
        "mws_handshake_failures_total{reason=\"say \\\"hi\\\"\\n\"} 1\n"
        "# HELP mws_peers Peers connected now.\n"
        "# TYPE mws_peers gauge\n"
        "mws_peers 3\n");
}

TEST_CASE("a declared family without series renders as zero; undeclared use is refused") {
  metrics_registry m;
  m.declare("mws_rounds_total", metrics_registry::kind::counter, "Rounds completed.");
  CHECK(m.render().find("mws_rounds_total 0\n") != std::string::npos);
  CHECK_THROWS_AS(m.add("mws_nope_total", 1), std::logic_error);
  CHECK_THROWS_AS(m.set("mws_rounds_total", 1), std::logic_error);  // a counter, not a gauge
  CHECK(m.value("mws_nope_total") == 0);
}

}  // namespace
}  // namespace mws::runtime
