#include "gossip/message.hpp"

namespace mws::gossip {

std::string_view to_string(message_kind k) noexcept {
  switch (k) {
    case message_kind::push_sum_running:
      return "push_sum_running";
    case message_kind::push_sum_plain:
      return "push_sum_plain";
    case message_kind::pairwise_propose:
      return "pairwise_propose";
    case message_kind::pairwise_accept:
      return "pairwise_accept";
    case message_kind::pairwise_reject:
      return "pairwise_reject";
    case message_kind::pairwise_commit:
      return "pairwise_commit";
    case message_kind::pairwise_abort:
      return "pairwise_abort";
    case message_kind::sync_value:
      return "sync_value";
    case message_kind::exact_value:
      return "exact_value";
    case message_kind::push_sum_ack:
      return "push_sum_ack";
    case message_kind::exact_abort:
      return "exact_abort";
    case message_kind::exact_ack:
      return "exact_ack";
  }
  return "?";
}

}  // namespace mws::gossip
