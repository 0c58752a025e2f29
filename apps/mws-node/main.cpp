// mws-node: one member of an mws mesh. A thin main over mws::runtime::node.
//
//   mws-node keygen --key node.key          create an identity
//   mws-node psk mesh.psk                   create a mesh pre-shared key
//   mws-node run --key node.key --model m.safetensors --seed 10.0.0.1:7400
//   mws-node status --http 127.0.0.1:7401   ask a running node
//   mws-node export --http 127.0.0.1:7401 --out avg.safetensors
//
// Options of `run` come from flags, MWS_* environment variables and a TOML file (--config);
// flags win over the environment, which wins over the file. Exit status: 0 ok, 2 bad usage or
// input (one clear message on stderr), 1 a failure while running.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "apps/mws-node/files.hpp"
#include "apps/mws-node/http_client.hpp"
#include "runtime/node.hpp"

namespace {

using namespace mws;

int fail(const std::string& message, int status = 2) {
  std::fprintf(stderr, "mws-node: %s\n", message.c_str());
  return status;
}

struct run_options {
  std::string key_file = "mws-node.key";
  std::string listen = "127.0.0.1:7400";
  std::string advertise;
  std::vector<std::string> seeds;
  std::string psk_file;
  std::string allowlist_file;
  std::string model_file;
  std::string random_init;
  std::uint64_t init_seed = 1;
  std::string data_dir;
  std::string http;
  std::string export_on_exit;
  double tick_ms = 20;
  double probe_ms = 1000;
  double checkpoint_s = 30;
  double epoch_s = 1;
  std::string device = "cpu";
  std::string log_level = "info";
  std::string algorithm = "push-sum";
};

void add_run_options(CLI::App& run, run_options& o) {
  run.set_config("--config", "", "TOML file with any of these options (key = value)");
  run.add_option("--key", o.key_file, "Identity key file; created (mode 0600) when missing")
      ->envname("MWS_KEY_FILE")
      ->capture_default_str();
  run.add_option("--listen", o.listen, "host:port to accept peers on (port 0: any free port)")
      ->envname("MWS_LISTEN")
      ->capture_default_str();
  run.add_option("--advertise", o.advertise,
                 "host:port that peers should dial (default: the bound listen address)")
      ->envname("MWS_ADVERTISE");
  run.add_option("--seed", o.seeds,
                 "host:port of a member to join through (repeat, or comma-separated)")
      ->envname("MWS_SEEDS")
      ->delimiter(',');
  run.add_option("--psk-file", o.psk_file,
                 "Mesh pre-shared key file (64 hex digits, mode 0600): nodes without it cannot "
                 "connect")
      ->envname("MWS_PSK_FILE");
  run.add_option("--allowlist", o.allowlist_file,
                 "File of peer public keys (64 hex digits per line) allowed to connect")
      ->envname("MWS_ALLOWLIST");
  auto* model =
      run.add_option("--model", o.model_file, "Initial model (safetensors)")->envname("MWS_MODEL");
  auto* random = run.add_option("--random-init", o.random_init,
                                "Random initial model instead: N, or name:AxB[:dtype],...")
                     ->envname("MWS_RANDOM_INIT");
  model->excludes(random);
  run.add_option("--init-seed", o.init_seed, "Seed of --random-init")
      ->envname("MWS_INIT_SEED")
      ->capture_default_str();
  run.add_option("--data-dir", o.data_dir, "Directory for checkpoints (resumed at start)")
      ->envname("MWS_DATA_DIR");
  run.add_option("--http", o.http, "host:port for /metrics /livez /readyz /status /export")
      ->envname("MWS_HTTP");
  run.add_option("--export-on-exit", o.export_on_exit,
                 "Write the final estimate here (safetensors) when the node stops")
      ->envname("MWS_EXPORT_ON_EXIT");
  run.add_option("--algorithm", o.algorithm,
                 "push-sum (asynchronous, converges geometrically) or exact (epochs that each "
                 "end with every node on the exact mean, bit for bit); the same on every node")
      ->envname("MWS_ALGORITHM")
      ->capture_default_str();
  run.add_option("--device", o.device,
                 "Where to mix: cpu, cuda (a GPU; slower today, see docs/BENCHMARKS.md) or auto "
                 "(a CUDA GPU when one is usable, else the CPU)")
      ->envname("MWS_DEVICE")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  run.add_option("--epoch-s", o.epoch_s, "exact: begin an epoch this often")
      ->envname("MWS_EPOCH_S")
      ->check(CLI::Range(0.01, 1e6))
      ->capture_default_str();
  run.add_option("--tick-ms", o.tick_ms, "Averaging: one share to one live member this often")
      ->envname("MWS_TICK_MS")
      ->check(CLI::Range(0.1, 3.6e6))
      ->capture_default_str();
  run.add_option("--probe-ms", o.probe_ms, "Membership: one failure-detection probe this often")
      ->envname("MWS_PROBE_MS")
      ->check(CLI::Range(10.0, 3.6e6))
      ->capture_default_str();
  run.add_option("--checkpoint-s", o.checkpoint_s,
                 "Checkpoint to --data-dir this often (and at shutdown)")
      ->envname("MWS_CHECKPOINT_S")
      ->check(CLI::Range(0.1, 1e7))
      ->capture_default_str();
  run.add_option("--log-level", o.log_level, "debug, info, warn or error (logs: JSON lines)")
      ->envname("MWS_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
}

runtime::node_result<runtime::node_options> make_options(const run_options& o) {
  runtime::node_options n;
  n.key_file = o.key_file;
  n.listen = o.listen;
  n.advertise = o.advertise;
  n.seeds = o.seeds;
  n.http_listen = o.http;
  n.data_dir = o.data_dir;
  n.tick_interval_us = static_cast<std::int64_t>(o.tick_ms * 1000);
  n.probe_interval_us = static_cast<std::int64_t>(o.probe_ms * 1000);
  n.checkpoint_interval_us = static_cast<std::int64_t>(o.checkpoint_s * 1e6);
  n.log_min = o.log_level == "debug"   ? runtime::log_level::debug
              : o.log_level == "warn"  ? runtime::log_level::warn
              : o.log_level == "error" ? runtime::log_level::error
                                       : runtime::log_level::info;
  n.epoch_interval_us = static_cast<std::int64_t>(o.epoch_s * 1e6);
  n.device = gpu::parse_backend_choice(o.device).value_or(gpu::backend_choice::automatic);
  if (auto a = runtime::parse_averaging(o.algorithm)) {
    n.algorithm = *a;
  } else {
    return runtime::node_error{"--algorithm " + o.algorithm +
                               ": mws-node runs push-sum or exact; pairwise and sync run in "
                               "mws-sim"};
  }
  if (!o.psk_file.empty()) {
    auto key = node_app::load_psk_file(o.psk_file);
    if (!key) return key.error();
    n.mesh_psk = *key;
  }
  if (!o.allowlist_file.empty()) {
    auto keys = node_app::load_allowlist_file(o.allowlist_file);
    if (!keys) return keys.error();
    n.allowlist = std::move(*keys);
  }
  return n;
}

runtime::node_result<runtime::model_file> initial_model(const run_options& o) {
  if (!o.model_file.empty()) {
    auto m = runtime::load_safetensors(o.model_file);
    if (!m) return runtime::node_error{m.error().message};
    return std::move(*m);
  }
  if (o.random_init.empty()) return runtime::node_error{"give --model FILE or --random-init N"};
  return node_app::random_model(o.random_init, o.init_seed);
}

int run_node(const run_options& o) {
  auto opts = make_options(o);
  if (!opts) return fail(opts.error().message);
  auto model = initial_model(o);
  if (!model) return fail(model.error().message);
  boost::asio::io_context io;
  auto created = runtime::node::create(io.get_executor(), std::move(*opts), std::move(*model));
  if (!created) return fail(created.error().message);
  auto& node = **created;
  if (auto started = node.start(); !started) return fail(started.error().message);
  // SIGINT / SIGTERM: leave the mesh, give the goodbye a moment to go out, then end the loop.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  boost::asio::steady_timer grace(io);
  const auto shut_down = [&] {
    signals.cancel();
    node.stop();
    grace.expires_after(std::chrono::milliseconds(500));
    grace.async_wait([&](boost::system::error_code) { io.stop(); });
  };
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (!ec) shut_down();
  });
  // A joining node that has not joined anyone and meets a peer with another model was most likely
  // started with the wrong file: say so and stop, rather than run alone forever.
  std::string refusal;
  node.subscribe([&](const runtime::node_event& e) {
    if (e.what != runtime::node_event::kind::peer_refused) return;
    if (e.reason != "manifest" && e.reason != "algorithm") return;
    if (o.seeds.empty() || !refusal.empty() || node.status().members_alive > 1) return;
    refusal = e.peer + " " + e.detail;
    shut_down();
  });
  try {
    io.run();
  } catch (const std::exception& e) {
    return fail(std::string("internal error (please report): ") + e.what(), 1);
  }
  if (!refusal.empty()) return fail(refusal);
  if (!o.export_on_exit.empty()) {
    auto estimate = node.estimate();
    if (!estimate) return fail("--export-on-exit: " + estimate.error().message, 1);
    if (auto saved = runtime::save_safetensors(o.export_on_exit, *estimate); !saved) {
      return fail(saved.error().message, 1);
    }
  }
  return 0;
}

int keygen(const std::string& path) {
  auto id = transport::identity::generate();
  if (auto saved = transport::save_identity(path, id); !saved) {
    return fail(path + ": " + saved.error().message());
  }
  std::printf("peer id     %s\npublic key  %s\n", id.id().to_string().c_str(),
              node_app::to_hex(id.public_key_bytes()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mws-node: keeps one model's weights in agreement with its peers, serverless and "
      "encrypted.\n\nStart a mesh:   mws-node run --random-init 1000 --listen 127.0.0.1:7400\n"
      "Join it:        mws-node run --random-init 1000 --listen 127.0.0.1:7410 --seed "
      "127.0.0.1:7400\n",
      "mws-node"};
  app.require_subcommand(1);
  std::string key_path = "mws-node.key", psk_path, http = "127.0.0.1:7401", out_path;
  run_options run_opts;

  auto* keygen_cmd = app.add_subcommand("keygen", "Create an identity key file (mode 0600)");
  keygen_cmd->add_option("--key", key_path, "Where to write it (never replaced)")
      ->capture_default_str();
  auto* psk_cmd = app.add_subcommand("psk", "Create a mesh pre-shared key file (mode 0600)");
  psk_cmd->add_option("file", psk_path, "Where to write it (never replaced)")->required();
  auto* run_cmd = app.add_subcommand("run", "Run a node until SIGINT or SIGTERM");
  add_run_options(*run_cmd, run_opts);
  auto* status_cmd = app.add_subcommand("status", "Print a running node's status (JSON)");
  status_cmd->add_option("--http", http, "The node's --http address")->capture_default_str();
  auto* export_cmd =
      app.add_subcommand("export", "Write a running node's current estimate as safetensors");
  export_cmd->add_option("--http", http, "The node's --http address")->capture_default_str();
  export_cmd->add_option("--out", out_path, "Output file (written atomically)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(std::string(e.what()) + " (see mws-node --help)");
  }
  if (*keygen_cmd) return keygen(key_path);
  if (*psk_cmd) {
    auto made = node_app::create_psk_file(psk_path);
    return made ? 0 : fail(made.error().message);
  }
  if (*run_cmd) {
    try {
      return run_node(run_opts);
    } catch (const std::bad_alloc&) {
      return fail("out of memory (is the model larger than this machine's memory?)", 1);
    }
  }
  auto body = node_app::http_get(http, *status_cmd ? "/status" : "/export");
  if (!body) return fail(body.error().message, 1);
  if (*status_cmd) {
    std::fwrite(body->data(), 1, body->size(), stdout);
    return 0;
  }
  auto model = runtime::parse_safetensors(std::as_bytes(std::span(*body)));
  if (!model) return fail("the node sent a malformed export: " + model.error().message, 1);
  if (auto saved = runtime::save_safetensors(out_path, *model); !saved) {
    return fail(saved.error().message, 1);
  }
  return 0;
}
