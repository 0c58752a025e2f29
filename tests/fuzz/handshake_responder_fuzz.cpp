// libFuzzer target: the handshake responder on hostile messages.
// Mode 0: msg1 and msg3 both come from the input.
// Mode 1: a genuine initiator writes msg1; msg3 comes from the input.
// Mode 2: a genuine handshake in which one byte of msg1 or msg3 is XORed: it must fail whenever
// the byte changed, and succeed with keys equal to the initiator's when it did not.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "transport/handshake.hpp"

namespace {

using namespace mws::transport;

identity fixed_identity(std::uint8_t seed) {
  std::array<std::uint8_t, key_bytes> secret{};
  for (std::size_t i = 0; i < secret.size(); ++i)
    secret[i] = static_cast<std::uint8_t>(seed + i);
  return identity::from_secret(secret);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t mode = data[0] % 3;
  const bool with_psk = data[0] & 4;
  data += 1;
  size -= 1;
  const identity responder_id = fixed_identity(1);
  const identity initiator_id = fixed_identity(101);
  handshake_config config;
  if (with_psk) config.mesh_psk = std::array<std::uint8_t, 32>{9, 9, 9};
  config.offer_aes256gcm = data[0] & 8;  // size >= 1 here
  handshake_responder responder(responder_id, config);

  if (mode == 0) {
    const std::size_t n1 = std::min(size, handshake_msg1_bytes);
    auto msg2 = responder.read_message1({data, n1});
    if (!msg2) return 0;
    (void)responder.read_message3({data + n1, size - n1});
    return 0;
  }
  handshake_initiator initiator(initiator_id, config);
  auto msg1 = initiator.write_message1();
  if (mode == 1) {
    auto msg2 = responder.read_message1(msg1);
    if (!msg2) __builtin_trap();  // a genuine msg1 under the same config must be accepted
    (void)responder.read_message3({data, size});
    return 0;
  }
  if (size < 3) return 0;
  const bool in_msg1 = data[0] & 1;
  const std::size_t offset = data[1];
  const std::uint8_t flip = data[2];
  bool changed = false;
  if (in_msg1) {
    changed = flip != 0;
    msg1[offset % msg1.size()] ^= flip;
  }
  auto msg2 = responder.read_message1(msg1);
  if (!msg2) {
    if (!changed) __builtin_trap();
    return 0;
  }
  auto msg3 = initiator.read_message2(*msg2);
  if (!msg3) {
    if (!changed) __builtin_trap();
    return 0;
  }
  if (!in_msg1) {
    changed = flip != 0;
    (*msg3)[offset % msg3->size()] ^= flip;
  }
  auto result = responder.read_message3(*msg3);
  if (changed && result) __builtin_trap();  // a changed byte can never complete the handshake
  if (!changed) {
    if (!result) __builtin_trap();
    const session mine = initiator.finish();
    if (mine.send_key != result->receive_key || mine.receive_key != result->send_key) {
      __builtin_trap();
    }
  }
  return 0;
}
