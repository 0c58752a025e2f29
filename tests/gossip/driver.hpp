// A tiny deterministic driver for the gossip state machines: a vector of nodes and one event
// queue ordered by (time, sequence), with a lossy, duplicating, reordering network. Optionally
// runs every message through the codec (encode -> bytes -> decode), as the simulator's
// wire-faithful mode does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <queue>
#include <vector>

#include "gossip/codec.hpp"
#include "gossip/node.hpp"
#include "gossip/rng.hpp"
#include "gpu/backend.hpp"

namespace mws::gossip::test {

struct network {
  double loss = 0.0;       // probability a message is dropped
  double duplicate = 0.0;  // probability a message is delivered twice
  time_us latency_min_us = 100;
  time_us latency_max_us = 100;  // uniform in [min, max]: a wide range reorders
  bool wire = false;             // encode -> decode every message
  // Push-sum running sums go in as streamed shares (averaging_node::begin_share): the first
  // half of every tensor on arrival, the rest one latency later, so that ticks and other
  // messages come in between; with probability `cut` the rest never comes (abort_share).
  bool stream = false;
  double cut = 0.0;
};

inline manifest one_tensor(std::size_t numel) {
  return {{"w", gpu::dtype::f32, numel}};
}

inline std::span<float> floats(tensor_set& s, std::size_t t = 0) {
  return {static_cast<float*>(s.views()[t].data), s.views()[t].numel};
}
inline std::span<const float> floats(const tensor_set& s, std::size_t t = 0) {
  return {static_cast<const float*>(s[t].data), s[t].numel};
}

class driver {
 public:
  driver(gpu::backend& b, network net, std::uint64_t seed)
      : backend_(b), stream_(b.make_stream().value()), net_(net), rng_(seed) {}

  // Adds a node; `init` fills its model (x and w) before the node takes it.
  averaging_node& add(const config& cfg, const manifest& spec,
                      const std::function<void(model&)>& init) {
    auto m = model::create(backend_, spec).value();
    init(m);
    ids_.push_back(cfg.self);
    nodes_.push_back(make_node(cfg, std::move(m), backend_, *stream_));
    sinks_.push_back(std::make_unique<sink>(*this, nodes_.size() - 1));
    return *nodes_.back();
  }

  void start(time_us now_us = 0) {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      nodes_[i]->start(now_us, *sinks_[i]);
  }

  // Processes events until time `until_us` or until `stop` returns true (checked after every
  // event). `each` runs after every event.
  void run(time_us until_us, const std::function<bool()>& stop = {},
           const std::function<void()>& each = {}) {
    while (!queue_.empty() && queue_.top().at_us <= until_us) {
      event ev = queue_.top();
      queue_.pop();
      now_us_ = ev.at_us;
      auto& n = *nodes_[ev.node];
      if (ev.msg && is_down(index_of(ev.from), ev.node)) {
        ++dropped;
        continue;
      }
      if (ev.msg && ev.rest) {
        finish_stream(n, ev);
      } else if (ev.msg && net_.stream && ev.msg->header.kind == message_kind::push_sum_running) {
        start_stream(n, ev);
      } else if (ev.msg) {
        const auto ec = n.on_message(ev.from, *ev.msg, now_us_, *sinks_[ev.node]);
        if (ec) ++refused;
      } else {
        n.on_tick(now_us_, *sinks_[ev.node]);
      }
      ++events;
      if (each) each();
      if (stop && stop()) return;
    }
    now_us_ = std::max(now_us_, until_us);
  }

  // Cuts (or restores) the link between nodes a and b: both are told, and messages between
  // them are dropped while it is down (also those already in flight when they arrive).
  void link_down(std::size_t a, std::size_t b) {
    down_.emplace_back(std::min(a, b), std::max(a, b));
    nodes_[a]->on_link_down(ids_[b], now_us_, *sinks_[a]);
    nodes_[b]->on_link_down(ids_[a], now_us_, *sinks_[b]);
  }
  void link_up(std::size_t a, std::size_t b) {
    std::erase(down_, std::pair{std::min(a, b), std::max(a, b)});
    nodes_[a]->on_link_up(ids_[b], now_us_, *sinks_[a]);
    nodes_[b]->on_link_up(ids_[a], now_us_, *sinks_[b]);
  }
  bool is_down(std::size_t a, std::size_t b) const {
    return std::find(down_.begin(), down_.end(), std::pair{std::min(a, b), std::max(a, b)}) !=
           down_.end();
  }

  // Node i's membership for its next exact epochs (averaging_node::set_members).
  error_code set_members(std::size_t i, std::span<const peer_id> members, std::uint64_t view) {
    return nodes_[i]->set_members(members, view, now_us_, *sinks_[i]);
  }
  // Cuts every link of node i, as if it crashed (it keeps its state; nothing reaches it).
  void isolate(std::size_t i) {
    for (std::size_t j = 0; j < nodes_.size(); ++j) {
      if (j != i && !is_down(i, j)) link_down(i, j);
    }
  }

  averaging_node& node(std::size_t i) { return *nodes_[i]; }
  std::size_t size() const { return nodes_.size(); }
  network& net() { return net_; }
  time_us now() const { return now_us_; }

  std::uint64_t events = 0;
  std::uint64_t sent = 0;
  std::uint64_t dropped = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t refused = 0;
  std::uint64_t streams_cut = 0;

 private:
  struct event {
    time_us at_us;
    std::uint64_t seq;
    std::size_t node;
    peer_id from;
    std::shared_ptr<const message> msg;  // null: a timer
    bool rest = false;                   // the second half of a streamed share
    bool operator>(const event& o) const {
      return at_us != o.at_us ? at_us > o.at_us : seq > o.seq;
    }
  };

  class sink final : public action_sink {
   public:
    sink(driver& d, std::size_t self) : d_(d), self_(self) {}
    void send(peer_id to, message msg) override { d_.deliver(self_, to, std::move(msg)); }
    void arm_timer(time_us at_us) override {
      d_.queue_.push({at_us, d_.seq_++, self_, peer_id{}, nullptr});
    }

   private:
    driver& d_;
    std::size_t self_;
  };

  std::size_t index_of(peer_id p) const {
    for (std::size_t i = 0; i < ids_.size(); ++i) {
      if (ids_[i] == p) return i;
    }
    return ids_.size();
  }

  // Tensor t's first half (`second` false) or second half, as one part.
  static gpu::const_tensor_view half(const message& m, std::size_t t, bool second) {
    const auto v = (*m.tensors)[t];
    const auto mid = v.numel / 2;
    return second ? v.slice(mid, v.numel - mid) : v.slice(0, mid);
  }

  // Opens a streamed share and mixes the first half of every tensor; one open already (or a
  // repeat): whole, as on_message.
  void start_stream(averaging_node& n, const event& ev) {
    auto& out = *sinks_[ev.node];
    auto opened = n.begin_share(ev.from, ev.msg->header, now_us_, out);
    if (!opened && opened.error() == errc::out_of_turn) {
      if (n.on_message(ev.from, *ev.msg, now_us_, out)) ++refused;
      return;
    }
    if (!opened) {
      ++refused;
      return;
    }
    if (!*opened) return;
    for (std::size_t t = 0; t < ev.msg->tensors->size(); ++t) {
      if (half(*ev.msg, t, false).numel != 0) (void)n.share_part(half(*ev.msg, t, false));
      if (t + 1 < ev.msg->tensors->size()) (void)n.share_part(half(*ev.msg, t, true));
    }
    auto rest = ev;
    rest.at_us = now_us_ + latency();
    rest.seq = seq_++;
    rest.rest = true;
    queue_.push(rest);
  }

  // The last tensor's second half and the end, or (with probability net_.cut) the abort.
  void finish_stream(averaging_node& n, const event& ev) {
    if (rng_.unit() < net_.cut) {
      ++streams_cut;
      (void)n.abort_share();
      return;
    }
    (void)n.share_part(half(*ev.msg, ev.msg->tensors->size() - 1, true));
    (void)n.end_share(now_us_, *sinks_[ev.node]);
  }

  time_us latency() {
    const auto span = static_cast<std::uint64_t>(net_.latency_max_us - net_.latency_min_us + 1);
    return net_.latency_min_us + static_cast<time_us>(rng_.below(span));
  }

  void deliver(std::size_t from, peer_id to, message msg) {
    ++sent;
    const std::size_t dst = index_of(to);
    if (dst == ids_.size()) return;
    if (is_down(from, dst)) {
      ++dropped;
      return;
    }
    if (rng_.unit() < net_.loss) {
      ++dropped;
      return;
    }
    std::shared_ptr<const message> m;
    if (net_.wire) {
      const auto& spec = nodes_[from]->state().spec;
      auto bytes = std::make_shared<std::vector<std::uint8_t>>(encode(msg, spec));
      auto decoded = decode(*bytes, nodes_[dst]->state().spec, bytes);
      if (!decoded) {
        ++refused;
        return;
      }
      m = std::make_shared<const message>(std::move(*decoded));
    } else {
      m = std::make_shared<const message>(std::move(msg));
    }
    queue_.push({now_us_ + latency(), seq_++, dst, ids_[from], m});
    if (rng_.unit() < net_.duplicate) {
      ++duplicated;
      queue_.push({now_us_ + latency(), seq_++, dst, ids_[from], m});
    }
  }

  gpu::backend& backend_;
  std::unique_ptr<gpu::stream> stream_;
  network net_;
  rng rng_;
  std::vector<peer_id> ids_;
  std::vector<std::pair<std::size_t, std::size_t>> down_;
  std::vector<std::unique_ptr<averaging_node>> nodes_;
  std::vector<std::unique_ptr<sink>> sinks_;
  std::priority_queue<event, std::vector<event>, std::greater<>> queue_;
  std::uint64_t seq_ = 0;
  time_us now_us_ = 0;
};

// Neighbour lists of common graphs over nodes 0..n-1 (peer ids = indices).
inline std::vector<peer_id> complete_neighbours(std::size_t n, std::size_t i) {
  std::vector<peer_id> out;
  for (std::size_t j = 0; j < n; ++j) {
    if (j != i) out.push_back({static_cast<std::uint32_t>(j)});
  }
  return out;
}

inline std::vector<peer_id> hypercube_neighbours(std::size_t n, std::size_t i) {
  std::vector<peer_id> out;
  for (std::size_t bit = 1; bit < n; bit <<= 1)
    out.push_back({static_cast<std::uint32_t>(i ^ bit)});
  return out;
}

inline std::vector<peer_id> ring_neighbours(std::size_t n, std::size_t i) {
  return {{static_cast<std::uint32_t>((i + n - 1) % n)}, {static_cast<std::uint32_t>((i + 1) % n)}};
}

inline std::vector<peer_id> all_members(std::size_t n) {
  std::vector<peer_id> out;
  for (std::size_t j = 0; j < n; ++j)
    out.push_back({static_cast<std::uint32_t>(j)});
  return out;
}

}  // namespace mws::gossip::test
