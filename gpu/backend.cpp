#include "gpu/backend.hpp"

#include <string>

#include "gpu/detail/cuda_entry.hpp"

namespace mws::gpu {

tensor_view tensor_view::slice(std::size_t first, std::size_t count) const noexcept {
  auto* base = static_cast<unsigned char*>(data);
  return {base + first * dtype_size(type), count, type, space};
}

const_tensor_view const_tensor_view::slice(std::size_t first, std::size_t count) const noexcept {
  const auto* base = static_cast<const unsigned char*>(data);
  return {base + first * dtype_size(type), count, type, space};
}

std::optional<backend_choice> parse_backend_choice(std::string_view name) noexcept {
  if (name == "auto") return backend_choice::automatic;
  if (name == "cpu") return backend_choice::cpu;
  if (name == "cuda") return backend_choice::cuda;
  return std::nullopt;
}

std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  if (name == "f32" || name == "F32") return dtype::f32;
  if (name == "f16" || name == "F16") return dtype::f16;
  if (name == "bf16" || name == "BF16") return dtype::bf16;
  return std::nullopt;
}

namespace {

class gpu_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mws.gpu"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok:
        return "success";
      case errc::size_mismatch:
        return "operands differ in element count";
      case errc::dtype_mismatch:
        return "operands differ in dtype";
      case errc::bad_term_count:
        return "weighted sum needs 1 to 16 inputs";
      case errc::overlapping_operands:
        return "output partially overlaps an input";
      case errc::wrong_memory_space:
        return "operand is not in memory this backend computes on";
      case errc::out_of_memory:
        return "out of memory";
      case errc::device_error:
        return "the GPU runtime reported an error";
      case errc::null_buffer:
        return "operand has elements but no storage";
      case errc::bad_sparse_matrix:
        return "not a valid sparse matrix (CSR offsets, columns or weights)";
    }
    return "unknown mws.gpu error";
  }
};

}  // namespace

const boost::system::error_category& gpu_category() noexcept {
  static const gpu_error_category category;
  return category;
}

backend_selection make_backend(backend_choice choice) {
  backend_selection s;
  if (choice == backend_choice::cpu) {
    s.chosen = make_cpu_backend();
    s.reason = "the CPU backend was requested";
    return s;
  }
#if defined(MWS_HAVE_CUDA)
  std::string why;
  if (auto cuda = detail::make_cuda_backend(why)) {
    s.chosen = std::move(cuda);
    s.reason = "a CUDA device is usable: " + why;
    return s;
  }
  s.reason = "no usable CUDA device: " + why;
#else
  s.reason = "this build has no CUDA backend";
#endif
  if (choice == backend_choice::automatic) {
    s.chosen = make_cpu_backend();
    s.reason += "; using the CPU";
  }
  return s;
}

}  // namespace mws::gpu
