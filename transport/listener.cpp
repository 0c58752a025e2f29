#include "transport/listener.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "transport/detail/connection_state.hpp"
#include "transport/error.hpp"

namespace mws::transport {
namespace asio = boost::asio;
using boost::system::error_code;

struct listener::shared_counts {
  std::size_t total = 0;
  std::unordered_map<std::string, std::size_t> per_address;  // only addresses with count > 0
  listener_stats stats;
};

struct listener::serve_context {
  identity self;
  connection_config config;
  connection_handler on_connection;
  refusal_handler on_refused;
  std::shared_ptr<shared_counts> counts;
};

namespace {

// Holds one connection slot; releasing it when the connection (or the failed handshake) ends.
struct slot {
  slot(std::shared_ptr<listener::shared_counts> c, std::string a)
      : counts(std::move(c)), address(std::move(a)) {}
  slot(const slot&) = delete;
  slot& operator=(const slot&) = delete;
  std::shared_ptr<listener::shared_counts> counts;
  std::string address;
  ~slot() {
    --counts->total;
    auto it = counts->per_address.find(address);
    if (it != counts->per_address.end() && --it->second == 0) counts->per_address.erase(it);
  }
};

void refuse(listener::serve_context& ctx, const std::string& address, error_code ec) {
  ++ctx.counts->stats.refused;
  if (ctx.on_refused) ctx.on_refused(address, ec);
}

asio::awaitable<void> serve_one(std::unique_ptr<link> l, std::shared_ptr<void> held,
                                std::shared_ptr<listener::serve_context> ctx, std::string address) {
  auto result = co_await handshake_as_responder(std::move(l), ctx->self, ctx->config);
  if (!result) {
    refuse(*ctx, address, result.error());
    co_return;
  }
  ++ctx->counts->stats.connected;
  // The slot now lives as long as the connection's state.
  connection c = std::move(*result);
  detail::state_of(c)->hold(std::move(held));
  if (ctx->on_connection) ctx->on_connection(std::move(c));
}

}  // namespace

boost::system::result<std::unique_ptr<listener>> listener::open(
    asio::any_io_executor executor, const asio::ip::tcp::endpoint& endpoint, const identity& self,
    listener_config config) {
  MWS_ASSERT(config.connections_max > 0 && config.connections_per_address_max > 0);
  MWS_ASSERT(config.handshake_burst >= 1.0 && config.rate_table_max > 0);
  asio::ip::tcp::acceptor acceptor(executor);
  error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec && endpoint.address().is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return ec;
  return std::unique_ptr<listener>(new listener(std::move(acceptor), self, std::move(config)));
}

listener::listener(asio::ip::tcp::acceptor acceptor, const identity& self, listener_config config)
    : acceptor_(std::move(acceptor)),
      self_(self),
      config_(std::move(config)),
      counts_(std::make_shared<shared_counts>()) {}

listener::~listener() {
  stop();
}

asio::ip::tcp::endpoint listener::local_endpoint() const {
  error_code ignored;
  return acceptor_.local_endpoint(ignored);
}

void listener::stop() noexcept {
  error_code ignored;
  acceptor_.close(ignored);
}

listener_stats listener::stats() const noexcept {
  return counts_->stats;
}

bool listener::take_token(const std::string& address) {
  const auto now = std::chrono::steady_clock::now();
  auto it = buckets_.find(address);
  if (it == buckets_.end()) {
    if (buckets_.size() >= config_.rate_table_max) {
      // Bounded table: forget the address seen least recently. Its next visit starts with a
      // full bucket, which costs at most one burst per eviction.
      auto stalest = std::min_element(buckets_.begin(), buckets_.end(), [](auto& a, auto& b) {
        return a.second.updated < b.second.updated;
      });
      buckets_.erase(stalest);
    }
    it = buckets_.emplace(address, bucket{config_.handshake_burst, now}).first;
  }
  bucket& b = it->second;
  const double elapsed_s = std::chrono::duration<double>(now - b.updated).count();
  b.tokens =
      std::min(config_.handshake_burst, b.tokens + elapsed_s * config_.handshakes_per_second);
  b.updated = now;
  if (b.tokens < 1.0) return false;
  b.tokens -= 1.0;
  return true;
}

asio::awaitable<void> listener::run(connection_handler on_connection, refusal_handler on_refused) {
  auto ctx = std::make_shared<serve_context>(serve_context{
      self_, config_.connection, std::move(on_connection), std::move(on_refused), counts_});
  auto executor = acceptor_.get_executor();
  while (acceptor_.is_open()) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      // Transient (out of descriptors, a peer that reset during accept): keep serving.
      continue;
    }
    ++counts_->stats.accepted;
    auto l = make_tcp_link(std::move(socket), config_.connection.socket_buffer_bytes);
    std::string address = l->remote_address();
    auto& per_address = counts_->per_address[address];
    if (counts_->total >= config_.connections_max ||
        per_address >= config_.connections_per_address_max) {
      if (per_address == 0) counts_->per_address.erase(address);
      l->close();
      refuse(*ctx, address, make_error_code(errc::too_many_connections));
      continue;
    }
    if (!take_token(address)) {
      if (per_address == 0) counts_->per_address.erase(address);
      l->close();
      refuse(*ctx, address, make_error_code(errc::rate_limited));
      continue;
    }
    ++per_address;
    ++counts_->total;
    auto held = std::make_shared<slot>(counts_, address);
    asio::co_spawn(
        executor, serve_one(std::move(l), std::move(held), ctx, address), [](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            std::fprintf(stderr, "mws.transport: handshake ended by exception: %s\n", ex.what());
          }
        });
  }
}

}  // namespace mws::transport
