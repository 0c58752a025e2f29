// A minimal HTTP/1.1 GET for `mws-node status` and `export`: one request to a node's --http
// address, a deadline, a cap on the body.
#pragma once

#include <string>

#include "runtime/node.hpp"

namespace mws::node_app {

inline constexpr std::size_t http_body_bytes_max = std::size_t{16} << 30;

// The body of a 200 answer, or a sentence saying what went wrong.
runtime::node_result<std::string> http_get(const std::string& address, const std::string& path);

}  // namespace mws::node_app
