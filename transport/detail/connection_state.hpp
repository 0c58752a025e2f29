// The state behind a connection handle: frame reader, sender with credit, keepalive.
// Internal; see connection.hpp for the contract.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "transport/connection.hpp"
#include "transport/detail/event.hpp"
#include "transport/detail/frame.hpp"

namespace mws::transport::detail {

// Window credit a data frame costs beyond its payload, on both ends alike: empty frames are not
// free, so the window also bounds how many frames (queue entries) a peer can make us hold.
inline constexpr std::uint64_t data_frame_charge = 64;

class connection_state : public std::enable_shared_from_this<connection_state> {
 public:
  connection_state(std::unique_ptr<link> l, const session& s, const connection_config& config);
  connection_state(const connection_state&) = delete;
  connection_state& operator=(const connection_state&) = delete;

  void start();  // spawns the reader and the keepalive coroutines
  // A token whose destruction releases a listener's connection slot; dies with the state.
  void hold(std::shared_ptr<void> token) { token_ = std::move(token); }

  boost::asio::awaitable<boost::system::error_code> send(
      std::span<const boost::asio::const_buffer> parts);
  boost::asio::awaitable<boost::system::result<received_piece>> receive(
      boost::asio::mutable_buffer into);
  boost::asio::awaitable<void> close_gracefully();
  void fail(boost::system::error_code ec) noexcept;

  link& the_link() noexcept { return *link_; }
  const public_key& remote_key() const noexcept { return remote_key_; }
  aead_kind aead() const noexcept { return sealer_.kind(); }
  const session_limits& remote_limits() const noexcept { return remote_; }
  connection_stats stats() const noexcept;
  boost::system::error_code error() const noexcept { return error_; }

 private:
  struct chunk {
    std::unique_ptr<std::uint8_t[]> bytes;  // not zeroed: the frame's plaintext fills it
    std::size_t size = 0;
    std::size_t offset = 0;
    bool end = false;
  };
  struct request {
    boost::asio::mutable_buffer into;
    bool pending = false;
    bool done = false;
    std::size_t bytes = 0;
    bool end = false;
  };
  using clock = std::chrono::steady_clock;

  static boost::asio::awaitable<void> reader_loop(std::shared_ptr<connection_state> self);
  static boost::asio::awaitable<void> keepalive_loop(std::shared_ptr<connection_state> self);
  static boost::asio::awaitable<void> control_loop(std::shared_ptr<connection_state> self);
  boost::asio::awaitable<boost::system::error_code> read_frame(const frame_header& parsed,
                                                               const header_bytes& header);
  // Caller holds write_mutex_. Seals `n` bytes of `plain` into `cipher` and writes the frame.
  boost::asio::awaitable<boost::system::error_code> write_frame(frame_type type,
                                                                const std::uint8_t* plain,
                                                                std::size_t n,
                                                                std::uint8_t* cipher);
  // A sealed data frame waiting for, or in, its write.
  struct out_frame {
    header_bytes header{};
    std::array<std::uint8_t, tag_bytes> tag{};
    std::vector<std::uint8_t> body;  // as large as the current message's frames
    std::size_t n = 0;
  };
  // Waits for window credit, seals one data frame from caller memory, starts its write.
  boost::asio::awaitable<boost::system::error_code> pipeline_frame(frame_type type,
                                                                   const std::uint8_t* data,
                                                                   std::size_t n);
  static boost::asio::awaitable<void> write_task(std::shared_ptr<connection_state> self,
                                                 out_frame* f);
  boost::asio::awaitable<boost::system::error_code> wait_write();
  boost::asio::awaitable<boost::system::error_code> release_pipeline();
  void consumed(std::size_t n, bool starving) noexcept;
  void kick_control();

  std::unique_ptr<link> link_;
  boost::asio::any_io_executor executor_;
  frame_sealer sealer_;
  frame_opener opener_;
  public_key remote_key_;
  session_limits local_;
  session_limits remote_;
  std::chrono::milliseconds keepalive_interval_;
  std::chrono::milliseconds idle_timeout_;
  std::chrono::milliseconds close_linger_;

  async_mutex send_mutex_;        // one message at a time
  async_mutex write_mutex_;       // one frame at a time (data and control frames interleave)
  std::array<out_frame, 2> out_;  // the send pipeline's two slots
  // Slot buffers up to this size stay allocated between messages; larger ones are released.
  static constexpr std::size_t slot_bytes_kept = 64 * 1024;
  std::size_t next_out_ = 0;
  bool holding_write_ = false;  // the send pipeline holds write_mutex_
  bool write_in_flight_ = false;
  event write_done_;
  std::uint64_t send_credit_;         // bytes the peer's window still admits
  std::uint64_t unacknowledged_ = 0;  // sent and not yet credited back
  event credit_changed_;

  std::deque<chunk> queue_;     // decrypted data the application has not taken yet
  std::uint64_t buffered_ = 0;  // bytes in queue_
  std::uint64_t buffered_peak_ = 0;
  request request_;
  bool filling_ = false;  // the reader is writing a frame straight into request_.into
  event received_;
  std::uint64_t outstanding_ = 0;  // received and not yet credited back (<= local_.window_bytes)
  std::uint64_t unreported_ = 0;   // consumed and not yet credited back
  std::uint64_t credit_due_ = 0;   // credit decided, not yet sent
  bool pong_due_ = false;
  bool ping_due_ = false;
  bool control_running_ = false;

  boost::asio::steady_timer keepalive_timer_;
  clock::time_point last_receive_;
  clock::time_point last_send_;
  bool closing_ = false;
  boost::system::error_code error_;
  connection_stats stats_;
  std::shared_ptr<void> token_;
};

}  // namespace mws::transport::detail
