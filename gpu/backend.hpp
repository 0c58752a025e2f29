// The compute backends: weighted averaging and reductions over model buffers.
//
// One plain-C++ interface, two implementations: CUDA (cuBLAS plus fused kernels of our own) and a
// vectorised CPU fallback. make_backend() picks CUDA when a device is usable and says why it
// did or did not. No CUDA header is reachable from this file.
//
// Execution model. Every operation is enqueued on a `stream` and returns at once; it has run
// when the stream's completion callback fires (or after stream::synchronize()). The CPU backend
// runs each operation before returning, so its callbacks fire immediately. Arguments are checked
// when the operation is enqueued: a bad call returns an error and enqueues nothing.
//
// Numerics (identical on every backend, so that nodes on CPUs and GPUs agree bit for bit):
//   * storage f32, f16 or bf16; arithmetic in f32; results rounded to nearest even;
//   * weighted_sum: acc = a_0*x_0, then acc = fma(a_k, x_k, acc) for k = 1..K-1, in that order
//     (mix_rows: the same, over a row's terms in ascending column order);
//   * axpy: y = fma(a, x, y); scale: x = a*x;
//   * a NaN result is a quiet NaN; its payload is unspecified (GPUs produce the canonical one);
//   * reductions accumulate in f64 in an order fixed by the backend (no atomics), so a result
//     repeats run to run on the same backend; across backends they agree to rounding.
//
// Thread-safety: a backend may be shared by threads; a stream and the buffers it touches must
// be used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include "gpu/dtype.hpp"
#include "gpu/error.hpp"

namespace mws::gpu {

using boost::system::error_code;
template <class T>
using result = boost::system::result<T>;

enum class memory_space : std::uint8_t {
  host,         // ordinary host memory
  pinned_host,  // page-locked host memory, for fast asynchronous copies to and from a device
  device,       // memory of the backend's device (for the CPU backend: host memory)
};

// A typed, non-owning window onto a buffer. numel counts elements, not bytes.
struct tensor_view {
  void* data = nullptr;
  std::size_t numel = 0;
  dtype type = dtype::f32;
  memory_space space = memory_space::host;

  std::size_t bytes() const noexcept { return numel * dtype_size(type); }
  // Elements [first, first + count) of this view; the caller keeps within bounds.
  tensor_view slice(std::size_t first, std::size_t count) const noexcept;
};

struct const_tensor_view {
  const void* data = nullptr;
  std::size_t numel = 0;
  dtype type = dtype::f32;
  memory_space space = memory_space::host;

  const_tensor_view() = default;
  const_tensor_view(const void* d, std::size_t n, dtype t, memory_space s) noexcept
      : data(d), numel(n), type(t), space(s) {}
  const_tensor_view(const tensor_view& v) noexcept  // NOLINT: implicit, like T* -> const T*
      : data(v.data), numel(v.numel), type(v.type), space(v.space) {}

  std::size_t bytes() const noexcept { return numel * dtype_size(type); }
  const_tensor_view slice(std::size_t first, std::size_t count) const noexcept;
};

// An owned allocation. Move-only; frees itself through the backend that made it, which must
// outlive it.
class buffer {
 public:
  using deleter = void (*)(void*) noexcept;

  buffer() = default;
  buffer(void* data, std::size_t numel, dtype type, memory_space space, deleter free) noexcept
      : data_(data, free), numel_(numel), type_(type), space_(space) {}

  tensor_view view() noexcept { return {data_.get(), numel_, type_, space_}; }
  const_tensor_view view() const noexcept { return {data_.get(), numel_, type_, space_}; }
  void* data() noexcept { return data_.get(); }
  const void* data() const noexcept { return data_.get(); }
  std::size_t numel() const noexcept { return numel_; }
  std::size_t bytes() const noexcept { return numel_ * dtype_size(type_); }
  dtype type() const noexcept { return type_; }
  memory_space space() const noexcept { return space_; }

 private:
  std::unique_ptr<void, deleter> data_{nullptr, nullptr};
  std::size_t numel_ = 0;
  dtype type_ = dtype::f32;
  memory_space space_ = memory_space::host;
};

// An ordered queue of operations. Work on one stream runs in order; different streams may
// overlap.
class stream {
 public:
  virtual ~stream() = default;
  // Calls `done` once everything enqueued so far has finished, with the first error any of it
  // met. `done` may run on a thread of the backend's (CUDA's callback thread): it must only hand
  // the result over, for example by posting to an event loop; it must not call the backend.
  virtual void on_complete(std::function<void(error_code)> done) = 0;
  // Blocks the calling thread until everything enqueued so far has finished.
  virtual error_code synchronize() = 0;
};

struct weighted_term {
  const_tensor_view x;
  float a = 0.0f;
};

// A sparse n x n matrix held where the backend computes, for mix_rows. Made by upload_rows.
class sparse_rows {
 public:
  virtual ~sparse_rows() = default;
  virtual std::uint32_t rows() const noexcept = 0;
};

enum class reduction : std::uint8_t {
  sum,               // sum_i x_i
  dot,               // sum_i x_i * y_i
  squared_distance,  // sum_i (x_i - y_i)^2
};

class backend {
 public:
  static constexpr std::size_t max_terms = 16;

  virtual ~backend() = default;

  virtual std::string_view name() const noexcept = 0;
  // Human-readable description: device name, memory, vector width.
  virtual std::string description() const = 0;

  // Memory. `device` memory is where operations run; `pinned_host` memory is the staging area
  // for transfers. Contents are uninitialised. A freed buffer's memory may be handed out again
  // at once (the CUDA backend keeps pinned blocks for reuse): synchronize the streams that use a
  // buffer before freeing it.
  virtual result<buffer> allocate(dtype type, std::size_t numel, memory_space space) = 0;

  virtual result<std::unique_ptr<stream>> make_stream() = 0;

  // dst = src, byte for byte, between any two memory spaces. Same numel and dtype.
  virtual error_code copy(stream& s, tensor_view dst, const_tensor_view src) = 0;

  // dst = src converted to dst's dtype (same numel).
  virtual error_code convert(stream& s, tensor_view dst, const_tensor_view src) = 0;

  // out = sum_k terms[k].a * terms[k].x, 1 <= terms.size() <= max_terms. All operands share
  // numel and dtype and live in device memory; out may be one of the inputs (in place) but may
  // not partially overlap any of them.
  virtual error_code weighted_sum(stream& s, tensor_view out,
                                  std::span<const weighted_term> terms) = 0;

  // Keeps an n x n matrix in CSR form for mix_rows: offsets has n + 1 entries, from 0 up to
  // columns.size() == weights.size(); every row has at least one term; columns ascend strictly
  // within a row and lie below n; weights are finite. Anything else is errc::bad_sparse_matrix.
  // The result must outlive the operations enqueued with it.
  virtual result<std::unique_ptr<sparse_rows>> upload_rows(std::span<const std::uint32_t> offsets,
                                                           std::span<const std::uint32_t> columns,
                                                           std::span<const float> weights) = 0;

  // For every row i of w: out row i = sum_k weights[k] * x row columns[k] over the row's terms,
  // rounded as weighted_sum. x and out are f32, hold w.rows() rows of `width` values back to
  // back, live in device memory and do not overlap. w must come from this backend.
  virtual error_code mix_rows(stream& s, const sparse_rows& w, std::size_t width,
                              const_tensor_view x, tensor_view out) = 0;

  // y = a*x + y.
  virtual error_code axpy(stream& s, float a, const_tensor_view x, tensor_view y) = 0;

  // x = a*x.
  virtual error_code scale(stream& s, float a, tensor_view x) = 0;

  // *out = the reduction of x (and y for dot and squared_distance; ignored for sum), written
  // when the operation completes. `out` must stay valid until then.
  virtual error_code reduce(stream& s, reduction op, const_tensor_view x, const_tensor_view y,
                            double* out) = 0;
};

enum class backend_choice : std::uint8_t { automatic, cpu, cuda };

// "auto", "cpu" or "cuda"; nothing for any other name.
std::optional<backend_choice> parse_backend_choice(std::string_view name) noexcept;

struct backend_selection {
  std::unique_ptr<backend> chosen;  // null only when CUDA was demanded and is not usable
  std::string reason;               // why this backend (or why none): one line for the log
};

// automatic: CUDA if this build has it and a device is usable, else the CPU. cuda: CUDA or
// nothing. cpu: always the CPU backend.
backend_selection make_backend(backend_choice choice);

std::unique_ptr<backend> make_cpu_backend();

}  // namespace mws::gpu
