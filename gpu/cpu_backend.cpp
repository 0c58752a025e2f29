// The CPU backend: every operation runs to completion on the calling thread before the call
// returns, so its stream is a formality and completions fire at once.
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "gpu/backend.hpp"
#include "gpu/detail/cpu_kernels.hpp"
#include "gpu/detail/validate.hpp"
#include "gpu/host_pages.hpp"

namespace mws::gpu {
namespace {

constexpr std::size_t alignment_bytes = 64;

bool host_memory(memory_space) noexcept {
  return true;
}

class cpu_stream final : public stream {
 public:
  void on_complete(std::function<void(error_code)> done) override { done({}); }
  error_code synchronize() override { return {}; }
};

class cpu_sparse_rows final : public sparse_rows {
 public:
  cpu_sparse_rows(std::span<const std::uint32_t> o, std::span<const std::uint32_t> c,
                  std::span<const float> w)
      : offsets(o.begin(), o.end()), columns(c.begin(), c.end()), weights(w.begin(), w.end()) {}
  std::uint32_t rows() const noexcept override {
    return static_cast<std::uint32_t>(offsets.size() - 1);
  }

  std::vector<std::uint32_t> offsets, columns;
  std::vector<float> weights;
};

class cpu_backend final : public backend {
 public:
  cpu_backend() : kernels_(detail::select_cpu_kernels(why_)) {}

  std::string_view name() const noexcept override { return "cpu"; }

  std::string description() const override {
    return std::string("CPU, kernels ") + kernels_.isa + " because " + why_;
  }

  result<buffer> allocate(dtype type, std::size_t numel, memory_space space) override {
    const std::size_t size = dtype_size(type);
    if (numel > (SIZE_MAX - alignment_bytes) / size) return errc::out_of_memory;
    const std::size_t bytes =
        (numel * size + alignment_bytes - 1) / alignment_bytes * alignment_bytes;
    void* p = bytes == 0 ? nullptr : std::aligned_alloc(alignment_bytes, bytes);
    if (bytes != 0 && p == nullptr) return errc::out_of_memory;
    advise_huge_pages(p, bytes);
    return buffer(p, numel, type, space, [](void* q) noexcept { std::free(q); });
  }

  result<std::unique_ptr<stream>> make_stream() override {
    return std::unique_ptr<stream>(std::make_unique<cpu_stream>());
  }

  error_code copy(stream&, tensor_view dst, const_tensor_view src) override {
    if (auto ec = detail::check_copy(dst, src)) return ec;
    if (dst.bytes() != 0 && dst.data != src.data) std::memcpy(dst.data, src.data, dst.bytes());
    return {};
  }

  error_code convert(stream&, tensor_view dst, const_tensor_view src) override {
    if (auto ec = detail::check_convert(dst, src, host_memory)) return ec;
    if (dst.data == src.data) return {};
    if (dst.type == src.type) {
      std::memcpy(dst.data, src.data, dst.bytes());  // a copy keeps every bit, NaN payloads too
    } else {
      kernels_.convert(dst.type, dst.data, src.type, src.data, dst.numel);
    }
    return {};
  }

  error_code weighted_sum(stream&, tensor_view out, std::span<const weighted_term> terms) override {
    if (auto ec = detail::check_weighted_sum(out, terms, host_memory)) return ec;
    const void* x[max_terms];
    float a[max_terms];
    for (std::size_t j = 0; j < terms.size(); ++j) {
      x[j] = terms[j].x.data;
      a[j] = terms[j].a;
    }
    kernels_.weighted_sum(out.type, out.data, x, a, terms.size(), out.numel);
    return {};
  }

  result<std::unique_ptr<sparse_rows>> upload_rows(std::span<const std::uint32_t> offsets,
                                                   std::span<const std::uint32_t> columns,
                                                   std::span<const float> weights) override {
    if (auto ec = detail::check_sparse_rows(offsets, columns, weights)) return ec;
    return std::unique_ptr<sparse_rows>(
        std::make_unique<cpu_sparse_rows>(offsets, columns, weights));
  }

  error_code mix_rows(stream&, const sparse_rows& w, std::size_t width, const_tensor_view x,
                      tensor_view out) override {
    const auto* m = dynamic_cast<const cpu_sparse_rows*>(&w);
    if (m == nullptr) return errc::bad_sparse_matrix;  // made by another backend
    if (auto ec = detail::check_mix_rows(w.rows(), width, x, out, host_memory)) return ec;
    kernels_.mix_rows(m->offsets.data(), m->columns.data(), m->weights.data(), m->rows(), width,
                      static_cast<const float*>(x.data), static_cast<float*>(out.data));
    return {};
  }

  error_code axpy(stream&, float a, const_tensor_view x, tensor_view y) override {
    const weighted_term t[] = {{y, 1.0f}, {x, a}};
    if (auto ec = detail::check_weighted_sum(y, t, host_memory)) return ec;
    kernels_.axpy(y.type, a, x.data, y.data, y.numel);
    return {};
  }

  error_code scale(stream&, float a, tensor_view x) override {
    if (auto ec = detail::check_operand(x, host_memory)) return ec;
    kernels_.scale(x.type, a, x.data, x.numel);
    return {};
  }

  error_code reduce(stream&, reduction op, const_tensor_view x, const_tensor_view y,
                    double* out) override {
    if (auto ec = detail::check_reduce(op, x, y, out, host_memory)) return ec;
    *out = kernels_.reduce(op, x.type, x.data, y.data, x.numel);
    return {};
  }

 private:
  std::string why_;
  const detail::cpu_kernels& kernels_;
};

}  // namespace

std::unique_ptr<backend> make_cpu_backend() {
  return std::make_unique<cpu_backend>();
}

}  // namespace mws::gpu
