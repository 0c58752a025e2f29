// mws-bench transport: goodput of one mws encrypted stream between two processes on loopback,
// beside raw TCP (iperf3, spawned) and TLS 1.3 with AES-256-GCM (OpenSSL through
// boost::asio::ssl, two processes) moving the same bytes in the same run; plus handshakes per
// second. Each figure is the median of --repeat runs; the table and --json give the ratios.
#include <fcntl.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "apps/mws-bench/commands.hpp"
#include "transport/listener.hpp"
#include "transport/memory_link.hpp"

namespace mws::bench {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

struct transport_options {
  double gib = 1.0;
  std::size_t frame_mib = 4;
  std::size_t window_frames = 4;
  int repeat = 3;
  int handshakes = 300;
  std::string json;
};

std::size_t total_bytes(const transport_options& o) {
  return static_cast<std::size_t>(o.gib * static_cast<double>(1ull << 30));
}

// --- processes --------------------------------------------------------------------------------

struct child {
  pid_t pid = -1;
  int port = 0;
};

// Forks `serve`, which must write its port to the fd it is given, then serve until killed.
child fork_server(const std::function<void(int port_fd)>& serve) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    try {
      serve(fds[1]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mws-bench transport server: %s\n", e.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  int port = 0;
  const ssize_t n = ::read(fds[0], &port, sizeof port);
  ::close(fds[0]);
  if (n != sizeof port) throw std::runtime_error("benchmark server did not start");
  return {pid, port};
}

void stop(child& c) {
  if (c.pid <= 0) return;
  ::kill(c.pid, SIGKILL);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  c.pid = -1;
}

void send_port(int fd, unsigned short port) {
  const int value = port;
  if (::write(fd, &value, sizeof value) != sizeof value) throw std::runtime_error("port pipe");
  ::close(fd);
}

std::vector<std::uint8_t> source_bytes(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

// The payload: `total` bytes as spans over one reused source buffer (no copies in the sender).
std::vector<asio::const_buffer> payload_parts(const std::vector<std::uint8_t>& src,
                                              std::size_t total) {
  std::vector<asio::const_buffer> parts;
  for (std::size_t left = total; left > 0;) {
    const std::size_t n = std::min(left, src.size());
    parts.emplace_back(src.data(), n);
    left -= n;
  }
  return parts;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// --- mws ----------------------------------------------------------------------------------------

transport::listener_config mws_config(const transport_options& o, bool aes) {
  transport::listener_config cfg;
  auto& limits = cfg.connection.handshake.limits;
  limits.frame_bytes_max = static_cast<std::uint32_t>(o.frame_mib << 20);
  limits.window_bytes = static_cast<std::uint32_t>((o.frame_mib * o.window_frames) << 20);
  cfg.connection.handshake.offer_aes256gcm = aes;
  cfg.handshakes_per_second = 1e9;  // the handshake benchmark dials back to back
  cfg.handshake_burst = 1e9;
  cfg.connections_per_address_max = 1u << 20;
  cfg.connections_max = 1u << 20;
  return cfg;
}

// Receives every message into the server's one buffer and answers each with a one-byte message.
asio::awaitable<void> mws_sink(transport::connection c, std::vector<std::uint8_t>& dest) {
  std::size_t offset = 0;
  while (true) {
    if (dest.size() - offset < (8u << 20)) offset = 0;
    auto r = co_await c.receive(asio::buffer(dest.data() + offset, dest.size() - offset));
    if (!r) co_return;
    offset += r->bytes;
    if (r->end_of_message) {
      const std::uint8_t ack = 1;
      const std::array<asio::const_buffer, 1> parts{asio::buffer(&ack, 1)};
      if (co_await c.send(parts)) co_return;
    }
  }
}

// sink: receive and acknowledge messages; otherwise accept handshakes and drop the connections.
child start_mws_server(const transport_options& o, bool aes, bool sink) {
  return fork_server([&](int port_fd) {
    asio::io_context io;
    std::vector<std::uint8_t> dest(sink ? (64u << 20) : 0);  // allocated once, outside timing
    const auto id = transport::identity::generate();
    auto lst = transport::listener::open(io.get_executor(),
                                         tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), id,
                                         mws_config(o, aes));
    if (!lst) throw std::runtime_error("listen: " + lst.error().message());
    send_port(port_fd, (*lst)->local_endpoint().port());
    asio::co_spawn(io,
                   (*lst)->run(
                       [&io, &dest, sink](transport::connection c) {
                         if (sink) asio::co_spawn(io, mws_sink(std::move(c), dest), asio::detached);
                       },
                       nullptr),
                   asio::detached);
    io.run();
  });
}

struct mws_result {
  double bytes_per_second = 0;
  std::string aead;
  std::uint64_t rekeys = 0;
};

mws_result mws_goodput(const transport_options& o, bool aes, const std::vector<std::uint8_t>& src) {
  child server = start_mws_server(o, aes, true);
  mws_result out;
  asio::io_context io;
  const auto parts = payload_parts(src, total_bytes(o));
  const auto config = mws_config(o, aes).connection;
  const auto id = transport::identity::generate();
  std::string error;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto c = co_await transport::dial(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                                        static_cast<unsigned short>(server.port)),
                                          id, config);
        if (!c) {
          error = "dial: " + c.error().message();
          co_return;
        }
        out.aead =
            c->aead() == transport::aead_kind::aes256gcm ? "AES-256-GCM" : "ChaCha20-Poly1305";
        const auto start = clock_type::now();
        if (auto ec = co_await c->send(parts)) {
          error = "send: " + ec.message();
          co_return;
        }
        std::array<std::uint8_t, 16> ack{};
        auto r = co_await c->receive(asio::buffer(ack));
        const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
        if (!r) {
          error = "ack: " + r.error().message();
          co_return;
        }
        out.bytes_per_second = static_cast<double>(total_bytes(o)) / seconds;
        out.rekeys = c->stats().send_rekeys;
        co_await c->close();
      },
      asio::detached);
  io.run();
  stop(server);
  if (!error.empty()) throw std::runtime_error("mws transfer failed: " + error);
  return out;
}

double mws_handshakes_per_second(const transport_options& o) {
  child server = start_mws_server(o, true, false);
  asio::io_context io;
  const auto config = mws_config(o, true).connection;
  const auto id = transport::identity::generate();
  double rate = 0;
  std::string error;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const tcp::endpoint at(asio::ip::make_address("127.0.0.1"),
                               static_cast<unsigned short>(server.port));
        const auto start = clock_type::now();
        for (int i = 0; i < o.handshakes; ++i) {
          auto c = co_await transport::dial(at, id, config);
          if (!c) {
            error = c.error().message();
            co_return;
          }
        }
        rate = o.handshakes / std::chrono::duration<double>(clock_type::now() - start).count();
      },
      asio::detached);
  io.run();
  stop(server);
  if (!error.empty()) throw std::runtime_error("mws handshake failed: " + error);
  return rate;
}

// Both sides in one thread over an in-memory link: the CPU cost of a handshake, without the
// scheduling delays of two processes on a loaded machine.
double mws_handshakes_per_second_in_process(const transport_options& o) {
  asio::io_context io;
  const auto config = mws_config(o, true).connection;
  const auto a = transport::identity::generate(), b = transport::identity::generate();
  double rate = 0;
  bool failed = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        const auto start = clock_type::now();
        for (int i = 0; i < o.handshakes; ++i) {
          auto [la, lb] = transport::make_memory_link_pair(io.get_executor());
          auto [ca, cb] = co_await (transport::handshake_as_initiator(std::move(la), a, config) &&
                                    transport::handshake_as_responder(std::move(lb), b, config));
          if (!ca || !cb) {
            failed = true;
            co_return;
          }
        }
        rate = o.handshakes / std::chrono::duration<double>(clock_type::now() - start).count();
      },
      asio::detached);
  io.run();
  if (failed) throw std::runtime_error("in-process handshake failed");
  return rate;
}

// --- iperf3 -------------------------------------------------------------------------------------

unsigned short free_port() {
  asio::io_context io;
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

std::string run_capture(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p))
    out.append(buf.data(), n);
  ::pclose(p);
  return out;
}

// bits_per_second of end.sum_received in iperf3's JSON.
double parse_iperf3(const std::string& json) {
  const auto at = json.find("\"sum_received\"");
  if (at == std::string::npos) return 0;
  const auto key = json.find("\"bits_per_second\"", at);
  if (key == std::string::npos) return 0;
  const auto colon = json.find(':', key);
  return std::strtod(json.c_str() + colon + 1, nullptr);
}

double iperf3_goodput(const transport_options& o) {
  const unsigned short port = free_port();
  const pid_t server = ::fork();
  if (server == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    const std::string p = std::to_string(port);
    ::execlp("iperf3", "iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", p.c_str(),
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  double bits = 0;
  for (int attempt = 0; attempt < 50 && bits == 0; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    bits = parse_iperf3(run_capture("iperf3 -J -c 127.0.0.1 -p " + std::to_string(port) + " -n " +
                                    std::to_string(total_bytes(o)) + " 2>/dev/null"));
  }
  ::kill(server, SIGKILL);
  int status = 0;
  ::waitpid(server, &status, 0);
  if (bits == 0) throw std::runtime_error("iperf3 did not run (is it installed?)");
  return bits / 8;
}

// --- TLS 1.3 ------------------------------------------------------------------------------------

void tls13_aes256gcm_only(asio::ssl::context& ctx) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(ctx.native_handle(), "TLS_AES_256_GCM_SHA384");
}

struct tls_result {
  double bytes_per_second = 0;
  std::string cipher;
};

tls_result tls_goodput(const transport_options& o, const std::vector<std::uint8_t>& src,
                       const std::filesystem::path& dir) {
  const auto cert = dir / "cert.pem", key = dir / "key.pem";
  if (!std::filesystem::exists(cert)) {
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=mws-bench -keyout " +
        key.string() + " -out " + cert.string() + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl req failed");
  }
  const std::size_t total = total_bytes(o);
  child server = fork_server([&](int port_fd) {
    asio::io_context io;
    asio::ssl::context ctx(asio::ssl::context::tls_server);
    tls13_aes256gcm_only(ctx);
    ctx.use_certificate_chain_file(cert.string());
    ctx.use_private_key_file(key.string(), asio::ssl::context::pem);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    send_port(port_fd, acceptor.local_endpoint().port());
    asio::ssl::stream<tcp::socket> s(io, ctx);
    acceptor.accept(s.next_layer());
    s.next_layer().set_option(tcp::no_delay(true));
    s.handshake(asio::ssl::stream_base::server);
    std::vector<std::uint8_t> dest(8u << 20);
    for (std::size_t got = 0; got < total;)
      got += s.read_some(asio::buffer(dest));
    const std::uint8_t ack = 1;
    asio::write(s, asio::buffer(&ack, 1));
    std::this_thread::sleep_for(std::chrono::seconds(60));  // killed by the parent
  });
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  tls13_aes256gcm_only(ctx);
  ctx.set_verify_mode(asio::ssl::verify_none);  // a benchmark against our own child
  asio::ssl::stream<tcp::socket> s(io, ctx);
  s.next_layer().connect(
      tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server.port)));
  s.next_layer().set_option(tcp::no_delay(true));
  s.handshake(asio::ssl::stream_base::client);
  tls_result out;
  out.cipher = SSL_get_cipher_name(s.native_handle());
  const auto start = clock_type::now();
  for (std::size_t left = total; left > 0;) {
    const std::size_t n = std::min(left, src.size());
    asio::write(s, asio::buffer(src.data(), n));
    left -= n;
  }
  std::uint8_t ack = 0;
  asio::read(s, asio::buffer(&ack, 1));
  out.bytes_per_second =
      static_cast<double>(total) / std::chrono::duration<double>(clock_type::now() - start).count();
  stop(server);
  return out;
}

// --- report ---------------------------------------------------------------------------------

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf.data();
}

void run_transport(const transport_options& o) {
  if (o.frame_mib < 1 || o.frame_mib > 8) throw std::runtime_error("--frame-mib must be 1 to 8");
  ::signal(SIGPIPE, SIG_IGN);
  const auto src = source_bytes(std::min<std::size_t>(total_bytes(o), 256u << 20));
  const auto dir =
      std::filesystem::temp_directory_path() / ("mws-bench-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);

  std::vector<double> aes, chacha, tcp_raw, tls;
  mws_result aes_info, chacha_info;
  tls_result tls_info;
  for (int i = 0; i < o.repeat; ++i) {  // interleaved, so drift on a shared box hits all alike
    aes_info = mws_goodput(o, true, src);
    aes.push_back(aes_info.bytes_per_second);
    chacha_info = mws_goodput(o, false, src);
    chacha.push_back(chacha_info.bytes_per_second);
    tcp_raw.push_back(iperf3_goodput(o));
    tls_info = tls_goodput(o, src, dir);
    tls.push_back(tls_info.bytes_per_second);
  }
  const double hs = mws_handshakes_per_second(o);
  const double hs_cpu = mws_handshakes_per_second_in_process(o);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);

  const double m_aes = median(aes), m_chacha = median(chacha), m_tcp = median(tcp_raw),
               m_tls = median(tls);
  const double best_mws = std::max(m_aes, m_chacha);
  const auto gbit = [](double bps) { return bps * 8 / 1e9; };
  const unsigned cores = std::thread::hardware_concurrency();
  std::printf(
      "mws-bench transport: %.2f GiB over 127.0.0.1, frames %zu MiB, window %zu MiB, "
      "median of %d\n",
      o.gib, o.frame_mib, o.frame_mib * o.window_frames, o.repeat);
  std::printf("machine: %s, %u cores; %s\n\n", cpu_model().c_str(), cores, utc_now().c_str());
  std::printf("%-34s %12s %10s\n", "stream", "Gbit/s", "vs TCP");
  std::printf("%-34s %12.2f %10.2f\n", "raw TCP (iperf3)", gbit(m_tcp), 1.0);
  std::printf("%-34s %12.2f %10.2f\n", ("TLS 1.3 " + tls_info.cipher).c_str(), gbit(m_tls),
              m_tls / m_tcp);
  std::printf("%-34s %12.2f %10.2f\n", ("mws " + aes_info.aead).c_str(), gbit(m_aes),
              m_aes / m_tcp);
  std::printf("%-34s %12.2f %10.2f\n", ("mws " + chacha_info.aead).c_str(), gbit(m_chacha),
              m_chacha / m_tcp);
  std::printf("\nmws / raw TCP: %.2f (goal >= 0.6)   mws / TLS: %.2f (goal >= 1.2)\n",
              best_mws / m_tcp, best_mws / m_tls);
  std::printf("handshakes per second (TCP connect + handshake, 2 processes, sequential): %.0f\n",
              hs);
  std::printf("handshakes per second (both sides in one thread, in-memory link): %.0f\n", hs_cpu);

  if (!o.json.empty()) {
    std::ostringstream j;
    j << "{\n  \"benchmark\": \"transport\",\n  \"date\": \"" << utc_now() << "\",\n"
      << "  \"machine\": {\"cpu\": \"" << cpu_model() << "\", \"cores\": " << cores << "},\n"
      << "  \"bytes\": " << total_bytes(o) << ",\n  \"frame_bytes\": " << (o.frame_mib << 20)
      << ",\n  \"window_bytes\": " << ((o.frame_mib * o.window_frames) << 20)
      << ",\n  \"repeat\": " << o.repeat << ",\n"
      << "  \"goodput_bytes_per_second\": {\"iperf3_tcp\": " << m_tcp << ", \"tls13_"
      << "aes256gcm\": " << m_tls << ", \"mws_aes256gcm\": " << m_aes
      << ", \"mws_chacha20poly1305\": " << m_chacha << "},\n"
      << "  \"mws_aead\": \"" << aes_info.aead << "\",\n  \"tls_cipher\": \"" << tls_info.cipher
      << "\",\n  \"ratio_vs_tcp\": " << best_mws / m_tcp
      << ",\n  \"ratio_vs_tls\": " << best_mws / m_tls
      << ",\n  \"goal_ratio_vs_tcp\": 0.6,\n  \"goal_ratio_vs_tls\": 1.2,\n"
      << "  \"handshakes_per_second\": " << hs
      << ",\n  \"handshakes_per_second_in_process\": " << hs_cpu << "\n}\n";
    std::ofstream(o.json) << j.str();
  }
}

}  // namespace

void add_transport_command(CLI::App& app) {
  auto o = std::make_shared<transport_options>();
  auto* cmd = app.add_subcommand(
      "transport", "Encrypted stream goodput vs raw TCP (iperf3) and TLS 1.3; handshakes/s");
  cmd->add_option("--gib", o->gib, "GiB moved per run")->check(CLI::Range(0.01, 64.0));
  cmd->add_option("--frame-mib", o->frame_mib, "frame payload, MiB (1-8)")->check(CLI::Range(1, 8));
  cmd->add_option("--window-frames", o->window_frames, "receive window, in frames")
      ->check(CLI::Range(1, 16));
  cmd->add_option("--repeat", o->repeat, "runs per figure (median)")->check(CLI::Range(1, 21));
  cmd->add_option("--handshakes", o->handshakes, "handshakes timed")->check(CLI::Range(1, 100000));
  cmd->add_option("--json", o->json, "also write the figures as JSON to this file");
  cmd->callback([o] { run_transport(*o); });
}

}  // namespace mws::bench
