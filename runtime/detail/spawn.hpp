// Completion handler for asio::co_spawn in the node: an exception escaping a coroutine is a
// programmer error, so it propagates out of io_context::run() (where the app reports it and
// exits non-zero) instead of vanishing, as it would with asio::detached.
#pragma once

#include <exception>

namespace mws::runtime::detail {

inline void rethrow_failure(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

}  // namespace mws::runtime::detail
