// Push-sum shares mixed while they stream in: a model-sized running sum is never held whole.
// peers hands the first piece of a large averaging message to node::impl::stream_share, which
// decodes its header and opens the share in the averaging node (gossip::averaging_node::
// begin_share); each piece's tensor bytes are then checked (gossip::tensor_stream) and mixed
// part by part. A share cut short (its link ended, its bytes were refused, or the node stops)
// is completed from the node's own estimate (abort_share): nothing is lost or made up.
#include "runtime/detail/node_impl.hpp"

namespace mws::runtime {
namespace {

class share_stream final : public detail::large_receiver {
 public:
  // `mix`: the share is open in the averaging node; else its bytes are read and dropped.
  share_stream(node::impl& n, const public_key& from, gossip::decoded_header h, bool mix)
      : n_(n), from_(from), open_(mix) {
    if (mix) bytes_.emplace(std::move(h), n.gspec);
  }

  void on_bytes(std::span<const std::uint8_t> bytes, bool last) override {
    const auto skip = std::min(bytes.size(), prefix_left_);
    prefix_left_ -= skip;
    if (!open_) return;
    if (auto ec = bytes_->feed(bytes.subspan(skip),
                               [this](std::size_t, auto part) { return mix(part); })) {
      return refuse(ec);
    }
    if (!detail::host_backend(*n_.backend)) {
      if (n_.stream->synchronize()) return refuse(gossip::errc::backend_failed);
      used_ = 0;
    }
    if (!last) return;
    if (!bytes_->done()) return refuse(gossip::errc::truncated);
    if (auto ec = n_.averaging->end_share(n_.now_us(), n_)) return refuse(ec);
    open_ = false;
    n_.share_closed();
  }

  void on_cut() override { cut_short(); }

  // The rest of the share will not be mixed: it is completed from the node's own estimate.
  void cut_short() {
    if (!open_) return;
    open_ = false;
    if (n_.averaging->abort_share() == gossip::errc::backend_failed) backend_failed();
    n_.share_closed();
  }

  const public_key& from() const noexcept { return from_; }

 private:
  // One checked part into x: on a GPU through a device copy.
  boost::system::error_code mix(gpu::const_tensor_view part) {
    if (detail::host_backend(*n_.backend)) return n_.averaging->share_part(part);
    auto on_device = to_device(part);
    if (!on_device) return gossip::errc::backend_failed;
    return n_.averaging->share_part(*on_device);
  }

  // A device copy of `part` in the node's scratch buffer, which the stream's work reads until
  // the next synchronize. The host bytes (the piece, tensor_stream's carries) may be reused as
  // soon as the copy is queued: a copy from pageable memory is staged before it returns. A
  // pinned piece buffer would need a synchronize before its reuse.
  gpu::result<gpu::const_tensor_view> to_device(gpu::const_tensor_view part) {
    constexpr std::size_t scratch_bytes = 2 * detail::large_message_bytes;
    const auto bytes = (part.bytes() + 15) / 16 * 16;
    auto& scratch = n_.share_scratch;
    if (!scratch.data()) {
      auto b = n_.backend->allocate(gpu::dtype::f32, scratch_bytes / 4, gpu::memory_space::device);
      if (!b) return b.error();
      scratch = std::move(*b);
    }
    if (used_ + bytes > scratch_bytes) {  // parts already queued on the stream read it
      if (auto ec = n_.stream->synchronize()) return ec;
      used_ = 0;
    }
    const gpu::tensor_view dst(static_cast<std::byte*>(scratch.data()) + used_, part.numel,
                               part.type, gpu::memory_space::device);
    used_ += bytes;
    if (auto ec = n_.backend->copy(*n_.stream, dst, part)) return ec;
    return gpu::const_tensor_view(dst);
  }

  void refuse(boost::system::error_code ec) {
    cut_short();
    if (ec == gossip::errc::backend_failed) return backend_failed();
    n_.refused_message(from_, ec);
  }

  void backend_failed() {
    n_.log.log(log_level::error, "receive_failed",
               {{"error", make_error_code(gossip::errc::backend_failed).message()}});
    n_.metrics.add("mws_backend_errors_total", 1);
  }

  node::impl& n_;
  public_key from_;
  std::optional<gossip::tensor_stream> bytes_;  // while open
  bool open_;
  std::size_t prefix_left_ = detail::channel_prefix_bytes;
  std::size_t used_ = 0;  // bytes of the node's share_scratch queued since the last synchronize
};

}  // namespace

std::shared_ptr<detail::large_receiver> node::impl::stream_share(
    const public_key& key, std::span<const std::uint8_t> first, std::size_t total) {
  if (exact()) return nullptr;  // exact mode keeps values for later steps: whole
  auto h = gossip::decode_header(first.subspan(detail::channel_prefix_bytes), gspec);
  // A header longer than the first piece, or a message that is no running sum: whole, where
  // on_message says what it is.
  if (!h && h.error() == gossip::errc::truncated) return nullptr;
  // Its bytes are read and dropped.
  const auto discard = [&] {
    return std::make_shared<share_stream>(*this, key, gossip::decoded_header{}, false);
  };
  if (!h) {
    refused_message(key, h.error());
    return discard();
  }
  if (h->header.kind != gossip::message_kind::push_sum_running) return nullptr;
  if (h->layout.total_bytes != total - detail::channel_prefix_bytes) {
    refused_message(key, gossip::errc::wrong_byte_size);
    return discard();
  }
  // Stopping: the final checkpoint is written; see on_message.
  if (stopped) return discard();
  auto opened = averaging->begin_share(id_of(key), h->header, now_us(), *this);
  // Another share open, or an averaging node that does not stream: whole, for on_message.
  if (!opened && (opened.error() == gossip::errc::out_of_turn ||
                  opened.error() == gossip::errc::not_supported)) {
    return nullptr;
  }
  if (!opened) refused_message(key, opened.error());
  const bool mix = opened && *opened;
  auto s = std::make_shared<share_stream>(*this, key, std::move(*h), mix);
  if (mix) {
    streaming = s;
    ++shares_streamed;
  }
  return s;
}

void node::impl::cut_share(const public_key* from) {
  auto s = std::static_pointer_cast<share_stream>(streaming.lock());
  if (s && (!from || s->from() == *from)) s->cut_short();
}

void node::impl::share_closed() {
  if (!checkpoint_waiting) return;
  checkpoint_waiting = false;
  save_checkpoint();
  next_checkpoint_us = now_us() + opts.checkpoint_interval_us;
}

}  // namespace mws::runtime
