#include "simulations/error.hpp"

#include <boost/system/system_error.hpp>
#include <boost/throw_exception.hpp>

namespace mws::sim {
namespace {

class sim_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mws.sim"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok:
        return "ok";
      case errc::bad_scenario:
        return "bad scenario";
      case errc::unknown_topology:
        return "unknown topology";
      case errc::too_few_nodes:
        return "fewer than two nodes";
      case errc::bad_topology:
        return "topology cannot be built";
      case errc::bad_edge_list:
        return "bad edge list";
      case errc::unreadable_file:
        return "unreadable file";
      case errc::bad_toml:
        return "bad TOML scenario";
      case errc::unsupported:
        return "unsupported combination";
    }
    return "unknown mws.sim error";
  }
};

}  // namespace

const boost::system::error_category& sim_category() noexcept {
  static const sim_error_category category;
  return category;
}

void throw_exception_from_error(const failure& f, const boost::source_location& where) {
  boost::throw_exception(boost::system::system_error(f.code, f.message), where);
}

}  // namespace mws::sim
