// The node's HTTP endpoints and metric families.
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "runtime/detail/node_impl.hpp"

namespace mws::runtime::detail {
namespace {

std::string status_json(const node_status& s) {
  boost::json::object o;
  o["id"] = s.id;
  o["address"] = s.address;
  o["backend"] = s.backend;
  o["members_alive"] = s.members_alive;
  o["peers_connected"] = s.peers_connected;
  o["weight"] = s.weight;
  o["epochs_completed"] = s.epochs_completed;
  o["epochs_abandoned"] = s.epochs_abandoned;
  o["epoch_step"] = s.epoch_step;
  o["stalls"] = s.stalls;
  o["aborts_sent"] = s.aborts_sent;
  o["gives_returned"] = s.gives_returned;
  o["late_values"] = s.late_values;
  o["messages_sent"] = s.messages_sent;
  o["messages_received"] = s.messages_received;
  o["bytes_sent"] = s.bytes_sent;
  o["bytes_received"] = s.bytes_received;
  o["messages_refused"] = s.messages_refused;
  o["peers_refused"] = s.peers_refused;
  o["local_updates"] = s.local_updates;
  o["shares_streamed"] = s.shares_streamed;
  o["shares_cut"] = s.shares_cut;
  return boost::json::serialize(o) + "\n";
}

}  // namespace

void register_endpoints(node::impl& n, const node& self) {
  n.http->route("/livez", [] { return http_response{200, "text/plain", "ok\n"}; });
  n.http->route("/readyz", [&n] {
    const bool ready = n.running && (n.opts.seeds.empty() || n.members->alive_count() > 1);
    return http_response{ready ? 200u : 503u, "text/plain", ready ? "ready\n" : "joining\n"};
  });
  // Streamed from a temporary file: the node holds no second copy of the model meanwhile.
  // Where no such file can be made (a full or read-only disk), from memory.
  n.http->route("/export", [&n, &self] {
    auto file = estimate_to_temporary_file(n);
    if (file) return http_response{200, "application/octet-stream", std::move(*file)};
    if (n.averaging->state().w > 0.0) {
      n.log.log(log_level::warn, "export_in_memory", {{"why", file.error().message}});
    }
    auto body = self.estimate_safetensors();
    if (!body) return http_response{503, "text/plain", body.error().message + "\n"};
    return http_response{200, "application/octet-stream", std::move(*body)};
  });
  n.http->route("/status", [&self] {
    return http_response{200, "application/json", status_json(self.status())};
  });
  n.http->route("/metrics", [&n, &self] {
    const auto s = self.status();
    auto& r = n.metrics;
    r.set("mws_members_alive", static_cast<double>(s.members_alive));
    r.set("mws_peers_connected", static_cast<double>(s.peers_connected));
    r.set("mws_weight", s.weight);
    const auto counter = [&r](std::string_view name, double v) {
      r.add(name, v - r.value(name));  // counters mirror totals kept elsewhere
    };
    counter("mws_messages_sent_total", static_cast<double>(s.messages_sent));
    counter("mws_messages_received_total", static_cast<double>(s.messages_received));
    counter("mws_bytes_sent_total", static_cast<double>(s.bytes_sent));
    counter("mws_bytes_received_total", static_cast<double>(s.bytes_received));
    counter("mws_messages_dropped_total", static_cast<double>(n.links->stats().dropped));
    counter("mws_large_messages_granted_total", static_cast<double>(n.links->stats().granted));
    counter("mws_shares_superseded_total", static_cast<double>(n.links->stats().superseded));
    r.set("mws_large_offers_waiting", static_cast<double>(n.links->offers_waiting()));
    counter("mws_local_updates_total", static_cast<double>(s.local_updates));
    counter("mws_shares_streamed_total", static_cast<double>(s.shares_streamed));
    counter("mws_shares_cut_total", static_cast<double>(s.shares_cut));
    counter("mws_averaging_shares_total", static_cast<double>(n.averaging->stats().sent));
    counter("mws_epochs_completed_total", static_cast<double>(s.epochs_completed));
    counter("mws_epochs_abandoned_total", static_cast<double>(s.epochs_abandoned));
    return http_response{200, "text/plain; version=0.0.4", r.render()};
  });
}

void declare_metrics(metrics_registry& m) {
  using k = metrics_registry::kind;
  m.declare("mws_members_alive", k::gauge, "Members the node believes alive, itself included.");
  m.declare("mws_peers_connected", k::gauge, "Peers with an open, authenticated connection.");
  m.declare("mws_weight", k::gauge, "Push-sum weight w; the estimate is x / w.");
  m.declare("mws_messages_sent_total", k::counter, "Messages sent to peers.");
  m.declare("mws_messages_received_total", k::counter, "Messages received from peers.");
  m.declare("mws_bytes_sent_total", k::counter, "Bytes of messages sent, before encryption.");
  m.declare("mws_bytes_received_total", k::counter, "Bytes of messages received, decrypted.");
  m.declare("mws_messages_dropped_total", k::counter,
            "Messages not sent: a full queue or a failed dial.");
  m.declare("mws_messages_refused_total", k::counter, "Messages refused as malformed or foreign.");
  m.declare("mws_large_messages_granted_total", k::counter,
            "Model-sized messages from peers admitted (one slot at a time).");
  m.declare("mws_shares_superseded_total", k::counter,
            "Queued copies of shares dropped unsent: acked through an earlier copy, or given up.");
  m.declare("mws_large_offers_waiting", k::gauge,
            "Peers' model-sized messages offered and waiting for a slot now.");
  m.declare("mws_peers_refused_total", k::counter,
            "Connections refused or failed, by reason (handshake, manifest, dial, ...).");
  m.declare("mws_member_events_total", k::counter, "Membership changes seen, by kind.");
  m.declare("mws_local_updates_total", k::counter, "Local updates applied.");
  m.declare("mws_shares_streamed_total", k::counter,
            "Model-sized push-sum shares mixed while they arrived (never held whole).");
  m.declare("mws_shares_cut_total", k::counter,
            "Streamed shares cut short (link ended, node stopping) and completed from the "
            "node's own estimate.");
  m.declare("mws_averaging_shares_total", k::counter, "Averaging messages emitted.");
  m.declare("mws_epochs_completed_total", k::counter,
            "Exact mode: epochs completed (each ends on the exact mean).");
  m.declare(
      "mws_epochs_abandoned_total", k::counter,
      "Exact mode: epochs ended early (a member failed, or views of the membership differed).");
  m.declare("mws_checkpoints_total", k::counter, "Checkpoints written.");
  m.declare("mws_backend_errors_total", k::counter,
            "Shares not sent or not received because the compute backend failed (GPU).");
  m.declare("mws_checkpoints_failed_total", k::counter, "Checkpoints that could not be written.");
}

}  // namespace mws::runtime::detail
