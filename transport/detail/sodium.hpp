// libsodium set-up shared by the transport's translation units.
#pragma once

#include <sodium.h>

#include "transport/detail/assert.hpp"

namespace mws::transport::detail {

// sodium_init() is idempotent and thread-safe; every entry point that uses libsodium calls this.
inline void ensure_sodium() noexcept {
  MWS_ASSERT(sodium_init() >= 0);
}

}  // namespace mws::transport::detail
