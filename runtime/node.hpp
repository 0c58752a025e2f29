// mws::runtime::node: one member of a mesh that averages a model with its peers. This is the
// public embedding API; apps/mws-node is a thin main over it.
//
//   boost::asio::io_context io;
//   mws::runtime::node_options opts;
//   opts.key_file = "node.key";
//   opts.seeds = {"10.0.0.1:7400"};
//   auto n = mws::runtime::node::create(io.get_executor(), opts, std::move(model)).value();
//   n->start().value();                 // binds, joins through the seeds
//   io.run();                           // or run the context on a thread of your own
//   ...  n->apply_local_update(delta);  // from the loop's thread (post() from others)
//   auto avg = n->estimate();           // the current estimate of the mesh's mean
//
// What it does: membership (SWIM + Lifeguard, gossip/membership.hpp) over authenticated,
// encrypted connections (transport/), and averaging (gossip/node.hpp) with every live member,
// mixing on the CPU or a GPU (CUDA): push-sum with running sums per link
// (the default), or exact mode, epochs of a hypercube schedule over the live membership. Every
// connection starts with a hello that carries the model manifest and the algorithm: a peer
// averaging another model, or with another algorithm, is refused and logged. Guarantees
// (docs/MODES.md): with no crash, every node's estimate converges to the exact weighted mean of the
// initial models plus all local updates (exact mode: every node holds that mean, bit for bit, after
// each epoch that completes); a node that crashes takes its mass with it, and the others converge
// to the mean of what remains.
//
// Threading: one event loop. Every member function must be called on the executor's thread
// (post to it from elsewhere); handlers and events run there too. The node owns no thread.
// Lifetime: call stop() and let the loop run until it returns before destroying the node.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/result.hpp>

#include "gpu/backend.hpp"
#include "runtime/log.hpp"
#include "runtime/model_file.hpp"
#include "transport/identity.hpp"

namespace mws::runtime {

enum class averaging : std::uint8_t {
  push_sum,  // asynchronous; converges geometrically; tolerates any membership churn
  exact,     // epochs over the membership; each that completes ends on the exact mean
};

std::string to_string(averaging a);  // "push-sum", "exact"
std::optional<averaging> parse_averaging(std::string_view name);

struct node_options {
  std::filesystem::path key_file;  // the node's identity; created (mode 0600) when missing
  std::optional<std::array<std::uint8_t, 32>> mesh_psk;  // every node of the mesh holds it
  std::vector<transport::public_key> allowlist;          // empty: any key that holds the psk
  std::string listen = "127.0.0.1:0";                    // host:port; port 0 picks one
  std::string advertise;           // the address peers dial (host name or IP); default: the
                                   // bound listen address
  std::vector<std::string> seeds;  // host:port of members to join through (name or IP)
  std::string http_listen;         // host:port of /metrics /livez /readyz /status; "" = off
  std::filesystem::path data_dir;  // checkpoints; "" = none

  averaging algorithm = averaging::push_sum;  // every member of a mesh must use the same
  // Where mixing runs. On CUDA the model lives in device memory and shares cross to and from
  // it through pinned host memory, which today costs more than it saves (docs/BENCHMARKS.md),
  // hence the CPU by default; automatic: CUDA when a device is usable.
  gpu::backend_choice device = gpu::backend_choice::cpu;
  std::int64_t tick_interval_us = 20'000;      // averaging: one share to one live member per tick
  std::int64_t epoch_interval_us = 1'000'000;  // exact: from the start of one epoch to the next
  std::int64_t probe_interval_us = 1'000'000;  // membership: one probe per interval
  std::int64_t checkpoint_interval_us = 30'000'000;
  std::uint64_t seed = 0;  // randomness of the protocols; 0 = from the OS
  log_level log_min = log_level::info;
  logger::sink log_sink;  // default: standard error
};

// A failure to create or start a node, as one sentence for the operator.
struct node_error {
  std::string message;
};
[[noreturn]] void throw_exception_from_error(const node_error& e, const boost::source_location&);
template <class T>
using node_result = boost::system::result<T, node_error>;

struct node_event {
  enum class kind : std::uint8_t { peer_joined, peer_failed, peer_left, peer_refused };
  kind what = kind::peer_joined;
  std::string peer;    // peer id (hex) or address
  std::string detail;  // why, for refusals
  std::string reason;  // refusals: handshake, manifest, bad_hello, dial, ...
};

struct node_status {
  std::string id;                 // this node's peer id (32 hex digits)
  std::string address;            // advertised
  std::string backend;            // where mixing runs: "cpu" or "cuda"
  std::size_t members_alive = 0;  // self included
  std::size_t peers_connected = 0;
  double weight = 0.0;  // w: the estimate is x / w (docs/MODES.md: while a share streams in)
  // exact mode: epochs, the step of the running one, steps waited on past the re-send interval,
  // values answered "never applied", shares handed over and taken back, values applied late
  std::uint64_t epochs_completed = 0, epochs_abandoned = 0;
  std::uint32_t epoch_step = 0;
  std::uint64_t stalls = 0, aborts_sent = 0, gives_returned = 0, late_values = 0;
  std::uint64_t messages_sent = 0, messages_received = 0;
  std::uint64_t bytes_sent = 0, bytes_received = 0;
  std::uint64_t messages_refused = 0, local_updates = 0;
  std::uint64_t peers_refused = 0;
  // push-sum: model-sized shares mixed while they arrived, and those of them cut short (their
  // link ended, or the node stopped) and completed from this node's own estimate
  std::uint64_t shares_streamed = 0, shares_cut = 0;
};

class node {
 public:
  // Loads (or creates) the key, checks the options and the model; binds nothing yet.
  static node_result<std::unique_ptr<node>> create(boost::asio::any_io_executor executor,
                                                   node_options options, model_file initial);
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // Binds the listener (and HTTP), starts membership and averaging, joins through the seeds.
  // Errors: address in use, unresolvable listen address, ...
  node_result<void> start();

  // Announces a graceful leave, closes every connection and the listeners. The loop may then
  // run out of work; pending coroutines finish shortly after.
  void stop();

  // x += delta (same manifest as the model), w += weight_delta. Allowed at any time.
  node_result<void> apply_local_update(const model_file& delta, double weight_delta = 0.0);

  // The current estimate x / w, in the manifest's dtypes (while a push-sum share streams in, the
  // elements it has reached are divided by w plus its weight: docs/MODES.md). Fails only while w is
  // 0: in exact mode, a member that handed its share to a partner which then failed holds none
  // until the next epoch.
  node_result<model_file> estimate() const;
  // The same as a safetensors file in memory, with no intermediate copy (for /export).
  node_result<std::string> estimate_safetensors() const;
  node_status status() const;
  const manifest& spec() const noexcept;

  void subscribe(std::function<void(const node_event&)> handler);

  boost::asio::ip::tcp::endpoint listen_endpoint() const;
  std::optional<boost::asio::ip::tcp::endpoint> http_endpoint() const;

  struct impl;

 private:
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

// Parses a "host:port" or "[v6]:port" with a numeric host into an endpoint.
node_result<boost::asio::ip::tcp::endpoint> parse_endpoint(const std::string& address);

// Checks an address others dial ("host:port", "[v6]:port"; the host an IP address or a DNS
// name, resolved when dialled; the port 1-65535), without resolving it.
node_result<void> check_address(const std::string& address);

}  // namespace mws::runtime
