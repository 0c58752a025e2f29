#include "transport/connection.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include "transport/detail/connection_state.hpp"
#include "transport/error.hpp"

namespace mws::transport {
namespace asio = boost::asio;
using boost::system::error_code;
using namespace boost::asio::experimental::awaitable_operators;

namespace detail {
namespace {

// Every co_spawn gets a completion that reports what escaped (nothing should: errors are codes).
void log_escape(const char* what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "mws.transport: %s ended by exception: %s\n", what, ex.what());
  } catch (...) {
    std::fprintf(stderr, "mws.transport: %s ended by an unknown exception\n", what);
  }
}

// Releases an async_mutex when the scope ends.
struct unlock_on_exit {
  async_mutex& mutex;
  ~unlock_on_exit() { mutex.unlock(); }
};

void put_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

}  // namespace

connection_state::connection_state(std::unique_ptr<link> l, const session& s,
                                   const connection_config& config)
    : link_(std::move(l)),
      executor_(link_->get_executor()),
      sealer_(s.aead, s.send_key, s.local.rekey_after_frames, s.local.rekey_after_bytes),
      opener_(s.aead, s.receive_key, s.remote.rekey_after_frames, s.remote.rekey_after_bytes,
              s.local.frame_bytes_max),
      remote_key_(s.remote_static),
      local_(s.local),
      remote_(s.remote),
      keepalive_interval_(config.keepalive_interval),
      idle_timeout_(config.idle_timeout),
      close_linger_(config.handshake_timeout),
      send_mutex_(executor_),
      write_mutex_(executor_),
      write_done_(executor_),
      send_credit_(s.remote.window_bytes),
      credit_changed_(executor_),
      received_(executor_),
      keepalive_timer_(executor_),
      last_receive_(clock::now()),
      last_send_(clock::now()) {
  MWS_ASSERT(keepalive_interval_.count() > 0 && idle_timeout_.count() > 0);
}

void connection_state::start() {
  asio::co_spawn(executor_, reader_loop(shared_from_this()),
                 [](std::exception_ptr e) { log_escape("frame reader", e); });
  asio::co_spawn(executor_, keepalive_loop(shared_from_this()),
                 [](std::exception_ptr e) { log_escape("keepalive", e); });
}

void connection_state::fail(error_code ec) noexcept {
  if (!error_) error_ = ec;
  link_->close();
  keepalive_timer_.cancel();
  received_.notify();
  credit_changed_.notify();
}

connection_stats connection_state::stats() const noexcept {
  connection_stats s = stats_;
  s.send_rekeys = sealer_.rekeys();
  s.receive_rekeys = opener_.rekeys();
  s.unacknowledged_bytes = unacknowledged_;
  s.buffered_bytes = buffered_;
  s.buffered_bytes_peak = buffered_peak_;
  return s;
}

// --- receiving ---------------------------------------------------------------------------------

asio::awaitable<void> connection_state::reader_loop(std::shared_ptr<connection_state> self) {
  header_bytes header{};
  while (!self->error_) {
    if (auto ec = co_await self->link_->read(asio::buffer(header))) {
      // At a frame boundary: a peer that vanishes without a close frame is a lost connection
      // (or a truncation by someone in the path); when we are closing it is the expected end.
      self->fail(self->closing_           ? make_error_code(errc::closed)
                 : ec == asio::error::eof ? make_error_code(errc::connection_lost)
                                          : ec);
      break;
    }
    self->last_receive_ = clock::now();
    auto parsed = self->opener_.check_header(header);
    if (!parsed) {
      self->fail(parsed.error());
      break;
    }
    if (auto ec = co_await self->read_frame(*parsed, header)) {
      self->fail(ec);
      break;
    }
  }
}

asio::awaitable<error_code> connection_state::read_frame(const frame_header& parsed,
                                                         const header_bytes& header) {
  const std::size_t n = parsed.payload_bytes();
  std::array<std::uint8_t, tag_bytes> tag{};
  std::array<std::uint8_t, credit_payload_bytes> small{};
  std::unique_ptr<std::uint8_t[]> owned;
  std::uint8_t* body = small.data();
  const bool is_data = parsed.type == frame_type::data || parsed.type == frame_type::data_end;
  bool direct = false;
  // However this returns, a receive() waiting for the reader to let go of its buffer may go on.
  struct let_go {
    connection_state& s;
    ~let_go() {
      if (!s.filling_) return;
      s.filling_ = false;
      s.received_.notify();
    }
  } guard{*this};
  if (is_data) {
    if (outstanding_ + n + data_frame_charge > local_.window_bytes) {
      co_return make_error_code(errc::window_violation);
    }
    outstanding_ += n + data_frame_charge;
    // Straight into the application's buffer when one is waiting and the frame fits: the
    // ciphertext lands there and is decrypted in place.
    direct =
        request_.pending && !request_.done && queue_.empty() && n > 0 && request_.into.size() >= n;
    if (direct) {
      body = static_cast<std::uint8_t*>(request_.into.data());
      filling_ = true;
    } else {
      // n <= frame_bytes_max, checked by check_header before this allocation
      owned = std::make_unique_for_overwrite<std::uint8_t[]>(n);
      body = owned.get();
    }
  }
  if (n > 0) {
    if (auto ec = co_await link_->read(asio::buffer(body, n))) {
      co_return ec == asio::error::eof ? make_error_code(errc::frame_truncated) : ec;
    }
  }
  if (auto ec = co_await link_->read(asio::buffer(tag))) {
    co_return ec == asio::error::eof ? make_error_code(errc::frame_truncated) : ec;
  }
  if (auto ec = opener_.open(parsed, header, std::span(body, n), tag.data())) co_return ec;
  ++stats_.frames_received;
  stats_.payload_bytes_received += n;

  switch (parsed.type) {
    case frame_type::data:
    case frame_type::data_end:
      if (direct) {
        request_.done = true;
        request_.bytes = n;
        request_.end = parsed.type == frame_type::data_end;
      } else {
        queue_.push_back({std::move(owned), n, 0, parsed.type == frame_type::data_end});
        buffered_ += n;
        buffered_peak_ = std::max(buffered_peak_, buffered_);
      }
      received_.notify();
      break;
    case frame_type::credit: {
      const std::uint64_t grant = get_u64(body);
      if (grant > unacknowledged_) co_return make_error_code(errc::window_violation);
      unacknowledged_ -= grant;
      send_credit_ += grant;
      credit_changed_.notify();
      break;
    }
    case frame_type::ping:
      pong_due_ = true;
      kick_control();
      break;
    case frame_type::pong:
      break;
    case frame_type::close:
      co_return make_error_code(closing_ ? errc::closed : errc::closed_by_peer);
  }
  co_return error_code{};
}

void connection_state::consumed(std::size_t n, bool starving) noexcept {
  unreported_ += n;
  // Report in quarters of the window, and everything when the application waits for data: a
  // waiting reader then has nothing unreported, so the sender is never stuck below a frame.
  if (unreported_ > 0 && (starving || unreported_ >= local_.window_bytes / 4)) {
    credit_due_ += unreported_;
    outstanding_ -= unreported_;
    unreported_ = 0;
    kick_control();
  }
}

asio::awaitable<boost::system::result<received_piece>> connection_state::receive(
    asio::mutable_buffer into) {
  MWS_ASSERT(into.size() > 0);
  MWS_ASSERT(!request_.pending);  // one receive() at a time
  while (true) {
    if (!queue_.empty()) {
      chunk& c = queue_.front();
      const std::size_t n = std::min(into.size(), c.size - c.offset);
      if (n > 0) std::memcpy(into.data(), c.bytes.get() + c.offset, n);
      c.offset += n;
      const bool done = c.offset == c.size;
      const received_piece piece{n, done && c.end};
      if (done) queue_.pop_front();
      buffered_ -= n;
      consumed(n + (done ? data_frame_charge : 0), false);
      co_return piece;
    }
    if (error_) co_return error_;
    consumed(0, true);
    request_ = request{into, true, false, 0, false};
    while (!request_.done && queue_.empty() && !error_) {
      if (auto ec = co_await received_.wait()) {
        fail(ec);  // cancelled while the reader may be filling `into`: the connection cannot go on
        break;
      }
    }
    // An error can end the wait while the reader still writes a frame into `into`, which the
    // caller may free once this returns: wait until the reader lets go of it.
    while (filling_)
      (void)co_await received_.wait();
    request_.pending = false;
    if (request_.done) {
      consumed(request_.bytes + data_frame_charge, false);
      co_return received_piece{request_.bytes, request_.end};
    }
  }
}

// --- sending -----------------------------------------------------------------------------------

asio::awaitable<error_code> connection_state::write_frame(frame_type type,
                                                          const std::uint8_t* plain, std::size_t n,
                                                          std::uint8_t* cipher) {
  if (error_) co_return error_;
  header_bytes header{};
  std::array<std::uint8_t, tag_bytes> tag{};
  sealer_.seal(type, plain, n, cipher, header, tag);
  const std::array<asio::const_buffer, 3> parts{asio::buffer(header), asio::buffer(cipher, n),
                                                asio::buffer(tag)};
  if (auto ec = co_await link_->write(parts)) {
    fail(ec);
    co_return error_;
  }
  last_send_ = clock::now();
  ++stats_.frames_sent;
  stats_.payload_bytes_sent += n;
  co_return error_code{};
}

// Data frames go out through a two-slot pipeline: frame k+1 is sealed while frame k is still
// being written, so encryption here overlaps decryption at the peer instead of alternating with
// it. The pipeline holds the write lock while a frame is in flight (sealing order is wire order:
// counters must arrive in sequence) and lets it go while it waits for credit and whenever a
// control frame is due, so our credit grants and pongs are never stuck behind a long message.
asio::awaitable<error_code> connection_state::send(std::span<const asio::const_buffer> parts) {
  if (auto ec = co_await send_mutex_.lock()) co_return ec;
  unlock_on_exit message_guard{send_mutex_};
  if (error_) co_return error_;
  // A frame and its charge must fit the peer's window (it announced at least frame_bytes_floor).
  const std::size_t frame_max =
      std::min<std::size_t>(remote_.frame_bytes_max, remote_.window_bytes - data_frame_charge);
  // Slots as large as this message's frames: a small message needs no frame-sized buffers.
  const std::size_t slot_bytes =
      std::max<std::size_t>(1, std::min(frame_max, asio::buffer_size(parts)));
  for (auto& slot : out_) {
    if (slot.body.size() < slot_bytes) slot.body.resize(slot_bytes);
  }
  // If this coroutine is destroyed mid-message, the lock must not stay held; the connection
  // cannot continue (a frame may be half written), so it fails.
  struct pipeline_guard {
    connection_state& s;
    ~pipeline_guard() {
      if (s.holding_write_) {
        s.fail(asio::error::operation_aborted);
        s.holding_write_ = false;
        s.write_mutex_.unlock();
      }
    }
  } guard{*this};

  std::size_t last = parts.size();
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].size() > 0) last = i;
  }
  error_code ec;
  if (last == parts.size()) {  // an empty message is one empty final frame
    ec = co_await pipeline_frame(frame_type::data_end, nullptr, 0);
  }
  for (std::size_t i = 0; !ec && last != parts.size() && i <= last; ++i) {
    const auto* data = static_cast<const std::uint8_t*>(parts[i].data());
    const std::size_t size = parts[i].size();
    for (std::size_t offset = 0; offset < size && !ec;) {
      const std::size_t n = std::min(size - offset, frame_max);
      const bool end = i == last && offset + n == size;
      ec = co_await pipeline_frame(end ? frame_type::data_end : frame_type::data, data + offset, n);
      offset += n;
    }
  }
  const error_code flushed = co_await release_pipeline();
  // Large slots go back to the allocator: a node keeps connections to many peers, and two idle
  // frame-sized buffers each would cost it megabytes per peer.
  if (slot_bytes > slot_bytes_kept && !write_in_flight_) {
    for (auto& slot : out_)
      std::vector<std::uint8_t>().swap(slot.body);
  }
  co_return ec ? ec : flushed;
}

asio::awaitable<error_code> connection_state::pipeline_frame(frame_type type,
                                                             const std::uint8_t* data,
                                                             std::size_t n) {
  const std::uint64_t cost = n + data_frame_charge;
  if (send_credit_ < cost) {
    ++stats_.credit_waits;
    if (auto ec = co_await release_pipeline()) co_return ec;
    while (send_credit_ < cost && !error_) {
      if (auto ec = co_await credit_changed_.wait()) {
        fail(ec);
        co_return ec;
      }
    }
  }
  if (error_) co_return error_;
  if (holding_write_ && (credit_due_ > 0 || pong_due_ || ping_due_)) {
    if (auto ec = co_await release_pipeline()) co_return ec;
    // The control sender was woken by the unlock; let it take the lock before we do.
    co_await asio::post(executor_, asio::use_awaitable);
  }
  if (!holding_write_) {
    if (auto ec = co_await write_mutex_.lock()) co_return ec;
    holding_write_ = true;
  }
  if (error_) co_return error_;
  out_frame& f = out_[next_out_];
  next_out_ ^= 1;
  sealer_.seal(type, data, n, f.body.data(), f.header, f.tag);
  f.n = n;
  send_credit_ -= cost;
  unacknowledged_ += cost;
  if (auto ec = co_await wait_write()) co_return ec;  // frame k leaves before k+1 starts
  write_in_flight_ = true;
  asio::co_spawn(executor_, write_task(shared_from_this(), &f),
                 [](std::exception_ptr e) { log_escape("frame writer", e); });
  co_return error_code{};
}

asio::awaitable<void> connection_state::write_task(std::shared_ptr<connection_state> self,
                                                   out_frame* f) {
  const std::array<asio::const_buffer, 3> parts{
      asio::buffer(f->header), asio::buffer(f->body.data(), f->n), asio::buffer(f->tag)};
  const error_code ec = co_await self->link_->write(parts);
  if (ec) {
    self->fail(ec);
  } else {
    self->last_send_ = clock::now();
    ++self->stats_.frames_sent;
    self->stats_.payload_bytes_sent += f->n;
  }
  self->write_in_flight_ = false;
  self->write_done_.notify();
}

asio::awaitable<error_code> connection_state::wait_write() {
  while (write_in_flight_) {
    if (auto ec = co_await write_done_.wait()) {
      fail(ec);
      co_return ec;
    }
  }
  co_return error_;
}

asio::awaitable<error_code> connection_state::release_pipeline() {
  const error_code ec = co_await wait_write();
  if (holding_write_ && !write_in_flight_) {
    holding_write_ = false;
    write_mutex_.unlock();
  }
  co_return ec;
}

void connection_state::kick_control() {
  if (control_running_ || error_) return;
  control_running_ = true;
  asio::co_spawn(executor_, control_loop(shared_from_this()),
                 [](std::exception_ptr e) { log_escape("control sender", e); });
}

// Sends pongs, pings and credit on behalf of the reader, which must never wait for the write
// lock itself: two peers whose readers wait on their own blocked writers would deadlock.
asio::awaitable<void> connection_state::control_loop(std::shared_ptr<connection_state> self) {
  while (!self->error_ && (self->pong_due_ || self->ping_due_ || self->credit_due_ > 0)) {
    if (co_await self->write_mutex_.lock()) break;
    unlock_on_exit guard{self->write_mutex_};
    std::array<std::uint8_t, credit_payload_bytes> buffer{};
    if (self->credit_due_ > 0) {
      std::array<std::uint8_t, credit_payload_bytes> grant{};
      put_u64(grant.data(), self->credit_due_);
      self->credit_due_ = 0;
      if (co_await self->write_frame(frame_type::credit, grant.data(), grant.size(),
                                     buffer.data())) {
        break;
      }
    } else if (self->pong_due_) {
      self->pong_due_ = false;
      if (co_await self->write_frame(frame_type::pong, nullptr, 0, buffer.data())) break;
    } else if (self->ping_due_) {
      self->ping_due_ = false;
      if (co_await self->write_frame(frame_type::ping, nullptr, 0, buffer.data())) break;
    }
  }
  self->control_running_ = false;
}

asio::awaitable<void> connection_state::keepalive_loop(std::shared_ptr<connection_state> self) {
  const auto tick = std::min(self->keepalive_interval_, self->idle_timeout_) / 2;
  while (!self->error_) {
    self->keepalive_timer_.expires_after(std::max(tick, std::chrono::milliseconds(1)));
    co_await self->keepalive_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (self->error_) break;
    const auto now = clock::now();
    if (now - self->last_receive_ >= self->idle_timeout_) {
      self->fail(make_error_code(errc::idle_timeout));
      break;
    }
    if (now - self->last_send_ >= self->keepalive_interval_) {
      self->ping_due_ = true;
      self->kick_control();
    }
  }
}

asio::awaitable<void> connection_state::close_gracefully() {
  if (error_ || closing_) co_return;
  closing_ = true;
  {
    if (co_await write_mutex_.lock()) co_return;
    unlock_on_exit guard{write_mutex_};
    std::array<std::uint8_t, 1> unused{};
    if (co_await write_frame(frame_type::close, nullptr, 0, unused.data())) co_return;
  }
  // Wait (bounded) for the peer's close frame or end of stream, so that closing the socket with
  // unread bytes in it does not turn into a reset that could cut off our close frame.
  asio::steady_timer linger(executor_);
  linger.expires_after(close_linger_);
  auto peer_done = [](std::shared_ptr<connection_state> s) -> asio::awaitable<void> {
    while (!s->error_) {
      if (co_await s->received_.wait()) co_return;
    }
  };
  co_await (peer_done(shared_from_this()) ||
            linger.async_wait(asio::as_tuple(asio::use_awaitable)));
  fail(make_error_code(errc::closed));
}

std::shared_ptr<connection_state> state_of(const connection& c) noexcept {
  return c.state_;
}

}  // namespace detail

// --- handle ------------------------------------------------------------------------------------

connection::connection(std::shared_ptr<detail::connection_state> state) noexcept
    : state_(std::move(state)) {}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    if (state_) state_->fail(make_error_code(errc::closed));
    state_ = std::move(other.state_);
  }
  return *this;
}

connection::~connection() {
  if (state_) state_->fail(make_error_code(errc::closed));
}

bool connection::is_open() const noexcept {
  return state_ && !state_->error();
}

asio::awaitable<error_code> connection::send(std::span<const asio::const_buffer> parts) {
  MWS_ASSERT(state_);
  auto state = state_;  // the handle may move while this coroutine waits
  co_return co_await state->send(parts);
}

asio::awaitable<boost::system::result<received_piece>> connection::receive(
    asio::mutable_buffer into) {
  MWS_ASSERT(state_);
  auto state = state_;
  co_return co_await state->receive(into);
}

asio::awaitable<void> connection::close() {
  if (!state_) co_return;
  auto state = state_;
  co_await state->close_gracefully();
}

const public_key& connection::remote_key() const noexcept {
  return state_->remote_key();
}
aead_kind connection::aead() const noexcept {
  return state_->aead();
}
std::string connection::remote_address() const {
  return state_->the_link().remote_address();
}
const session_limits& connection::remote_limits() const noexcept {
  return state_->remote_limits();
}
connection_stats connection::stats() const noexcept {
  return state_->stats();
}
error_code connection::error() const noexcept {
  return state_ ? state_->error() : make_error_code(errc::closed);
}

// --- handshakes --------------------------------------------------------------------------------

namespace {

error_code handshake_io_error(error_code ec) {
  return ec == asio::error::eof ? make_error_code(errc::handshake_truncated) : ec;
}

asio::awaitable<boost::system::result<session>> run_initiator(link& l, const identity& self,
                                                              const connection_config& config) {
  handshake_initiator hs(self, config.handshake);
  const auto msg1 = hs.write_message1();
  const std::array<asio::const_buffer, 1> out1{asio::buffer(msg1)};
  if (auto ec = co_await l.write(out1)) co_return handshake_io_error(ec);
  std::array<std::uint8_t, handshake_msg2_bytes> msg2{};
  if (auto ec = co_await l.read(asio::buffer(msg2))) co_return handshake_io_error(ec);
  auto msg3 = hs.read_message2(msg2);
  if (!msg3) co_return msg3.error();
  const std::array<asio::const_buffer, 1> out3{asio::buffer(*msg3)};
  if (auto ec = co_await l.write(out3)) co_return handshake_io_error(ec);
  co_return hs.finish();
}

asio::awaitable<boost::system::result<session>> run_responder(link& l, const identity& self,
                                                              const connection_config& config) {
  handshake_responder hs(self, config.handshake);
  std::array<std::uint8_t, handshake_msg1_bytes> msg1{};
  if (auto ec = co_await l.read(asio::buffer(msg1))) co_return handshake_io_error(ec);
  auto msg2 = hs.read_message1(msg1);
  if (!msg2) co_return msg2.error();
  const std::array<asio::const_buffer, 1> out2{asio::buffer(*msg2)};
  if (auto ec = co_await l.write(out2)) co_return handshake_io_error(ec);
  std::array<std::uint8_t, handshake_msg3_bytes> msg3{};
  if (auto ec = co_await l.read(asio::buffer(msg3))) co_return handshake_io_error(ec);
  co_return hs.read_message3(msg3);
}

asio::awaitable<boost::system::result<connection>> finish_handshake(std::unique_ptr<link> l,
                                                                    const identity& self,
                                                                    const connection_config& config,
                                                                    bool initiator) {
  asio::steady_timer deadline(l->get_executor());
  deadline.expires_after(config.handshake_timeout);
  link& raw = *l;
  // Named first: GCC 12 mishandles a conditional temporary inside a co_await expression.
  asio::awaitable<boost::system::result<session>> steps =
      initiator ? run_initiator(raw, self, config) : run_responder(raw, self, config);
  auto outcome =
      co_await (std::move(steps) || deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (outcome.index() == 1) {
    l->close();
    co_return make_error_code(errc::handshake_timeout);
  }
  auto& result = std::get<0>(outcome);
  if (!result) {
    l->close();  // refused before any application byte
    co_return result.error();
  }
  auto state = std::make_shared<detail::connection_state>(std::move(l), *result, config);
  state->start();
  co_return connection(std::move(state));
}

}  // namespace

asio::awaitable<boost::system::result<connection>> handshake_as_initiator(
    std::unique_ptr<link> l, const identity& self, const connection_config& config) {
  co_return co_await finish_handshake(std::move(l), self, config, true);
}

asio::awaitable<boost::system::result<connection>> handshake_as_responder(
    std::unique_ptr<link> l, const identity& self, const connection_config& config) {
  co_return co_await finish_handshake(std::move(l), self, config, false);
}

asio::awaitable<boost::system::result<connection>> dial(const asio::ip::tcp::endpoint& endpoint,
                                                        const identity& self,
                                                        const connection_config& config) {
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::socket socket(executor);
  asio::steady_timer deadline(executor);
  deadline.expires_after(config.handshake_timeout);
  auto outcome = co_await (socket.async_connect(endpoint, asio::as_tuple(asio::use_awaitable)) ||
                           deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (outcome.index() == 1) co_return make_error_code(errc::handshake_timeout);
  if (auto [ec] = std::get<0>(outcome); ec) co_return ec;
  co_return co_await handshake_as_initiator(
      make_tcp_link(std::move(socket), config.socket_buffer_bytes), self, config);
}

}  // namespace mws::transport
