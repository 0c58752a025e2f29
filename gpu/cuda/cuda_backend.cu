// The CUDA backend: device memory, streams and the operations of gpu/backend.hpp on one device.
//
// Every operation is checked with gpu/detail/validate.hpp (operands must be device memory),
// enqueued on the caller's stream and returned from at once; nothing here blocks except
// allocate (cudaMalloc, cudaHostAlloc), stream::synchronize, the destructors, and copies from or
// to ordinary (pageable) host memory, which CUDA stages synchronously: use pinned_host buffers
// for transfers that must not block. Freed pinned buffers are kept for reuse (pinned_cache).
//
// Element-wise work runs in the fused kernels of kernels.cu for every dtype, axpy and scale
// included: axpy is the two-term weighted sum {1*y, a*x} (1*y is exact, so the result is
// fma(a, x, y)) and scale the one-term sum {a*x}. cuBLAS (cublasSaxpy, cublasSscal) is not used:
// on an H100 its saxpy reached ~2.7 TB/s against ~3.0 TB/s for the fused kernel
// (shared/GPU.md), its element formula and its shortcuts for alpha == 0 are not documented, so
// bit-identical results with the CPU backend could not be promised, and one kernel for all
// dtypes keeps a single place where rounding happens.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>

#include <cuda_runtime.h>

#include "gpu/backend.hpp"
#include "gpu/cuda/kernels.cuh"
#include "gpu/detail/cuda_entry.hpp"
#include "gpu/detail/validate.hpp"

namespace mws::gpu {
namespace {

constexpr std::size_t host_alignment_bytes = 64;

bool device_memory(memory_space space) noexcept {
  return space == memory_space::device;
}

std::string describe(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

// Failed runtime calls also set the thread's "last error", which the next kernel launch would
// report as its own; clear it once the failure has been handled.
// MWS_CUDA_TRACE=1 prints each runtime failure as CUDA names it, for operators chasing a
// device_error.
error_code device_failure(cudaError_t e) noexcept {
  static const bool trace = std::getenv("MWS_CUDA_TRACE") != nullptr;
  if (trace)
    std::fprintf(stderr, "mws.gpu: CUDA %s: %s\n", cudaGetErrorName(e), cudaGetErrorString(e));
  (void)cudaGetLastError();
  return e == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::device_error;
}

// Whatever the runtime's reason (cudaErrorMemoryAllocation, or an invalid value for a size no
// device or host could hold), a failed allocation is reported as out_of_memory.
error_code allocation_failure(cudaError_t e) noexcept {
  (void)device_failure(e);
  return errc::out_of_memory;
}

void free_device(void* p) noexcept {
  (void)cudaFree(p);
}

// Pinned host memory is slow to allocate and to free (cudaHostAlloc locks every page,
// cudaFreeHost unlocks them and waits for the device), and a node stages every model-sized share
// it sends through it. So freed blocks are kept, the largest `kept_max` of them, and handed out
// again for requests of at least half their size (so a process holds up to two idle blocks of
// up to twice what it asks for). Process-wide, as a buffer's deleter has no state; never
// destroyed (the CUDA runtime may be gone by then): the process's exit frees it all. Reuse is
// immediate, so callers synchronize before freeing (backend.hpp).
class pinned_cache {
 public:
  static pinned_cache& get() {
    static auto* cache = new pinned_cache;
    return *cache;
  }

  error_code take(std::size_t bytes, void** out) {
    {
      std::lock_guard lock(mutex_);
      const auto fit = kept_.lower_bound(bytes);
      if (fit != kept_.end() && fit->first / 2 <= bytes) {
        *out = fit->second;
        kept_.erase(fit);
        return {};
      }
    }
    if (cudaError_t e = cudaHostAlloc(out, bytes, cudaHostAllocPortable))
      return allocation_failure(e);
    std::lock_guard lock(mutex_);
    sizes_[*out] = bytes;
    return {};
  }

  void give(void* p) noexcept {
    std::lock_guard lock(mutex_);
    const auto size = sizes_.find(p);
    if (size == sizes_.end()) return (void)cudaFreeHost(p);  // cannot happen: ours, all of them
    try {
      kept_.emplace(size->second, p);
    } catch (const std::bad_alloc&) {
      sizes_.erase(size);
      return (void)cudaFreeHost(p);
    }
    if (kept_.size() <= kept_max) return;
    void* smallest = kept_.begin()->second;
    kept_.erase(kept_.begin());
    sizes_.erase(smallest);
    (void)cudaFreeHost(smallest);
  }

 private:
  static constexpr std::size_t kept_max = 2;
  std::mutex mutex_;
  std::unordered_map<void*, std::size_t> sizes_;  // every block handed out or kept
  std::multimap<std::size_t, void*> kept_;        // freed blocks, by size
};

void free_pinned(void* p) noexcept {
  pinned_cache::get().give(p);
}

void free_host(void* p) noexcept {
  std::free(p);
}

// ---- stream ---------------------------------------------------------------------------------

// A cudaStream_t plus the scratch its reductions use: one partial per block in device memory
// and one pinned, device-mapped slot for the final value. One of each is enough however many
// reductions are queued, because the stream runs them one after another: the next reduction's
// kernels start only after the previous one's host function has copied the slot out.
class cuda_stream final : public stream {
 public:
  cuda_stream() = default;  // empty until create() fills it; the destructor copes with either

  static result<std::unique_ptr<cuda_stream>> create(int reduce_grid) {
    auto s = std::make_unique<cuda_stream>();
    if (cudaError_t e = cudaStreamCreateWithFlags(&s->stream_, cudaStreamNonBlocking)) {
      s->stream_ = nullptr;
      return device_failure(e);
    }
    void* partials = nullptr;
    if (cudaError_t e =
            cudaMalloc(&partials, static_cast<std::size_t>(reduce_grid) * sizeof(double)))
      return device_failure(e);
    s->partials_ = static_cast<double*>(partials);
    void* slot = nullptr;
    if (cudaError_t e = cudaHostAlloc(&slot, sizeof(double), cudaHostAllocMapped))
      return device_failure(e);
    s->result_host_ = static_cast<double*>(slot);
    void* slot_device = nullptr;
    if (cudaError_t e = cudaHostGetDevicePointer(&slot_device, slot, 0)) return device_failure(e);
    s->result_device_ = static_cast<double*>(slot_device);
    return s;
  }

  cuda_stream(const cuda_stream&) = delete;
  cuda_stream& operator=(const cuda_stream&) = delete;

  ~cuda_stream() override {
    // Queued work may still use the scratch (and callbacks may still be pending): drain first.
    if (stream_ != nullptr) {
      (void)cudaStreamSynchronize(stream_);
      (void)cudaStreamDestroy(stream_);
    }
    if (partials_ != nullptr) (void)cudaFree(partials_);
    if (result_host_ != nullptr) (void)cudaFreeHost(result_host_);
    (void)cudaGetLastError();
  }

  // cudaStreamAddCallback rather than cudaLaunchHostFunc: a host function is never called once
  // the context has failed, which would leave the waiter hanging; a stream callback is called
  // exactly once and told the error.
  void on_complete(std::function<void(error_code)> done) override {
    auto c = std::make_unique<completion>(std::move(done), std::exchange(first_error_, {}));
    if (cudaError_t e = cudaStreamAddCallback(stream_, &completion::call, c.get(), 0)) {
      const error_code failed = device_failure(e);
      c->done(c->first_error ? c->first_error : failed);
      return;
    }
    (void)c.release();  // completion::call owns it now
  }

  error_code synchronize() override {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    error_code ec = std::exchange(first_error_, {});
    if (e != cudaSuccess) {
      const error_code failed = device_failure(e);
      if (!ec) ec = failed;
    }
    return ec;
  }

  cudaStream_t get() const noexcept { return stream_; }
  double* partials() const noexcept { return partials_; }
  double* result_device() const noexcept { return result_device_; }
  double* result_host() const noexcept { return result_host_; }

  // Turns a launch or enqueue status into the operation's result and remembers the first
  // failure for the next on_complete or synchronize, which report it once.
  error_code record(cudaError_t e) noexcept {
    if (e == cudaSuccess) return {};
    const error_code ec = device_failure(e);
    if (!first_error_) first_error_ = ec;
    return ec;
  }

 private:
  struct completion {
    completion(std::function<void(error_code)> d, error_code first) noexcept
        : done(std::move(d)), first_error(first) {}
    std::function<void(error_code)> done;
    error_code first_error;

    static void CUDART_CB call(cudaStream_t, cudaError_t status, void* p) {
      const std::unique_ptr<completion> c(static_cast<completion*>(p));
      error_code ec = c->first_error;
      if (!ec && status != cudaSuccess) ec = errc::device_error;
      c->done(ec);
    }
  };

  cudaStream_t stream_ = nullptr;
  double* partials_ = nullptr;
  double* result_host_ = nullptr;
  double* result_device_ = nullptr;
  error_code first_error_;
};

// Hands a reduction's value from the pinned slot to the caller's `double*` on CUDA's callback
// thread, in stream order.
struct reduce_delivery {
  const double* slot;
  double* out;

  static void CUDART_CB call(void* p) {
    const std::unique_ptr<reduce_delivery> d(static_cast<reduce_delivery*>(p));
    *d->out = *d->slot;
  }
};

// A stream from another backend is a programmer error, like a pointer into the wrong
// allocator: stop at once rather than hand CUDA a foreign object.
cuda_stream& own(stream& s) {
  auto* c = dynamic_cast<cuda_stream*>(&s);
  if (c == nullptr) {
    std::fputs("mws::gpu: a stream of another backend was passed to the CUDA backend\n", stderr);
    std::abort();
  }
  return *c;
}

// ---- sparse rows ------------------------------------------------------------------------------

// The CSR arrays of a sparse_rows, in device memory of the backend that made it.
class cuda_sparse_rows final : public sparse_rows {
 public:
  static result<std::unique_ptr<cuda_sparse_rows>> upload(std::span<const std::uint32_t> offsets,
                                                          std::span<const std::uint32_t> columns,
                                                          std::span<const float> weights) {
    auto m = std::unique_ptr<cuda_sparse_rows>(new cuda_sparse_rows);
    m->rows_ = static_cast<std::uint32_t>(offsets.size() - 1);
    if (auto ec = m->put(m->offsets_, offsets.data(), offsets.size_bytes())) return ec;
    if (auto ec = m->put(m->columns_, columns.data(), columns.size_bytes())) return ec;
    if (auto ec = m->put(m->weights_, weights.data(), weights.size_bytes())) return ec;
    // A copy from pageable memory may return before it lands, and the backend's streams do not
    // wait for the legacy stream: finish the copies before any kernel can read them.
    if (cudaError_t e = cudaDeviceSynchronize()) return device_failure(e);
    return m;
  }
  ~cuda_sparse_rows() override {
    for (void* p : {offsets_, columns_, weights_})
      free_device(p);
  }
  cuda_sparse_rows(const cuda_sparse_rows&) = delete;
  cuda_sparse_rows& operator=(const cuda_sparse_rows&) = delete;

  std::uint32_t rows() const noexcept override { return rows_; }
  const std::uint32_t* offsets() const noexcept { return static_cast<std::uint32_t*>(offsets_); }
  const std::uint32_t* columns() const noexcept { return static_cast<std::uint32_t*>(columns_); }
  const float* weights() const noexcept { return static_cast<float*>(weights_); }

 private:
  cuda_sparse_rows() = default;

  static error_code put(void*& to, const void* from, std::size_t bytes) {
    if (cudaError_t e = cudaMalloc(&to, bytes)) return allocation_failure(e);
    if (cudaError_t e = cudaMemcpy(to, from, bytes, cudaMemcpyHostToDevice))
      return device_failure(e);
    return {};
  }

  std::uint32_t rows_ = 0;
  void* offsets_ = nullptr;
  void* columns_ = nullptr;
  void* weights_ = nullptr;
};

// ---- backend --------------------------------------------------------------------------------

class cuda_backend final : public backend {
 public:
  cuda_backend(int device, const cudaDeviceProp& props)
      : device_(device),
        sms_(props.multiProcessorCount),
        grid_(props.multiProcessorCount * cuda::blocks_per_sm),
        description_("CUDA device " + std::to_string(device) + ": " + props.name +
                     ", compute capability " + std::to_string(props.major) + "." +
                     std::to_string(props.minor) + ", " +
                     std::to_string(props.multiProcessorCount) + " SMs, " +
                     std::to_string(props.totalGlobalMem >> 20) + " MiB; kernels of " +
                     std::to_string(cuda::block_threads) + " threads, reductions over " +
                     std::to_string(props.multiProcessorCount * cuda::blocks_per_sm) + " blocks") {}

  std::string_view name() const noexcept override { return "cuda"; }
  std::string description() const override { return description_; }

  result<buffer> allocate(dtype type, std::size_t numel, memory_space space) override {
    const std::size_t size = dtype_size(type);
    if (numel > (SIZE_MAX - host_alignment_bytes) / size) return errc::out_of_memory;
    const std::size_t bytes = numel * size;
    if (bytes == 0) return buffer(nullptr, 0, type, space, free_host);
    void* p = nullptr;
    switch (space) {
      case memory_space::device:
        if (auto ec = use_device()) return ec;
        if (cudaError_t e = cudaMalloc(&p, bytes)) return allocation_failure(e);
        return buffer(p, numel, type, space, free_device);
      case memory_space::pinned_host:
        if (auto ec = use_device()) return ec;
        if (auto ec = pinned_cache::get().take(bytes, &p)) return ec;
        return buffer(p, numel, type, space, free_pinned);
      case memory_space::host:
        break;
    }
    const std::size_t rounded =
        (bytes + host_alignment_bytes - 1) / host_alignment_bytes * host_alignment_bytes;
    p = std::aligned_alloc(host_alignment_bytes, rounded);
    if (p == nullptr) return errc::out_of_memory;
    return buffer(p, numel, type, space, free_host);
  }

  result<std::unique_ptr<stream>> make_stream() override {
    if (auto ec = use_device()) return ec;
    auto s = cuda_stream::create(grid_);
    if (!s) return s.error();
    return std::unique_ptr<stream>(std::move(*s));
  }

  error_code copy(stream& s, tensor_view dst, const_tensor_view src) override {
    cuda_stream& cs = own(s);
    if (auto ec = detail::check_copy(dst, src)) return ec;
    if (dst.bytes() == 0 || dst.data == src.data) return {};
    if (auto ec = use_device()) return ec;
    return cs.record(cudaMemcpyAsync(dst.data, src.data, dst.bytes(), cudaMemcpyDefault, cs.get()));
  }

  error_code convert(stream& s, tensor_view dst, const_tensor_view src) override {
    cuda_stream& cs = own(s);
    if (auto ec = detail::check_convert(dst, src, device_memory)) return ec;
    if (dst.numel == 0 || dst.data == src.data) return {};
    if (auto ec = use_device()) return ec;
    if (dst.type == src.type) {
      return cs.record(
          cudaMemcpyAsync(dst.data, src.data, dst.bytes(), cudaMemcpyDeviceToDevice, cs.get()));
    }
    return cs.record(
        cuda::launch_convert(cs.get(), sms_, dst.type, dst.data, src.type, src.data, dst.numel));
  }

  error_code weighted_sum(stream& s, tensor_view out,
                          std::span<const weighted_term> terms) override {
    cuda_stream& cs = own(s);
    if (auto ec = detail::check_weighted_sum(out, terms, device_memory)) return ec;
    const void* x[max_terms];
    float a[max_terms];
    for (std::size_t j = 0; j < terms.size(); ++j) {
      x[j] = terms[j].x.data;
      a[j] = terms[j].a;
    }
    return run_weighted_sum(cs, out, x, a, terms.size());
  }

  result<std::unique_ptr<sparse_rows>> upload_rows(std::span<const std::uint32_t> offsets,
                                                   std::span<const std::uint32_t> columns,
                                                   std::span<const float> weights) override {
    if (auto ec = detail::check_sparse_rows(offsets, columns, weights)) return ec;
    if (auto ec = use_device()) return ec;
    auto m = cuda_sparse_rows::upload(offsets, columns, weights);
    if (!m) return m.error();
    return std::unique_ptr<sparse_rows>(std::move(*m));
  }

  error_code mix_rows(stream& s, const sparse_rows& w, std::size_t width, const_tensor_view x,
                      tensor_view out) override {
    cuda_stream& cs = own(s);
    const auto* m = dynamic_cast<const cuda_sparse_rows*>(&w);
    if (m == nullptr) return errc::bad_sparse_matrix;  // made by another backend
    if (auto ec = detail::check_mix_rows(w.rows(), width, x, out, device_memory)) return ec;
    if (auto ec = use_device()) return ec;
    return cs.record(cuda::launch_mix_rows(cs.get(), sms_, m->offsets(), m->columns(), m->weights(),
                                           m->rows(), width, static_cast<const float*>(x.data),
                                           static_cast<float*>(out.data)));
  }

  error_code axpy(stream& s, float a, const_tensor_view x, tensor_view y) override {
    cuda_stream& cs = own(s);
    const weighted_term t[] = {{y, 1.0f}, {x, a}};
    if (auto ec = detail::check_weighted_sum(y, t, device_memory)) return ec;
    const void* xs[] = {y.data, x.data};
    const float as[] = {1.0f, a};
    return run_weighted_sum(cs, y, xs, as, 2);
  }

  error_code scale(stream& s, float a, tensor_view x) override {
    cuda_stream& cs = own(s);
    if (auto ec = detail::check_operand(x, device_memory)) return ec;
    const void* xs[] = {x.data};
    const float as[] = {a};
    return run_weighted_sum(cs, x, xs, as, 1);
  }

  error_code reduce(stream& s, reduction op, const_tensor_view x, const_tensor_view y,
                    double* out) override {
    cuda_stream& cs = own(s);
    if (auto ec = detail::check_reduce(op, x, y, out, device_memory)) return ec;
    if (auto ec = use_device()) return ec;
    const cuda::reduce_op kernel_op = op == reduction::dot ? cuda::reduce_op::dot
                                      : op == reduction::squared_distance
                                          ? cuda::reduce_op::squared_distance
                                          : cuda::reduce_op::sum;
    if (auto ec = cs.record(cuda::launch_reduce(cs.get(), grid_, kernel_op, x.type, x.data,
                                                op == reduction::sum ? nullptr : y.data, x.numel,
                                                cs.partials(), cs.result_device())))
      return ec;
    auto d = std::make_unique<reduce_delivery>(reduce_delivery{cs.result_host(), out});
    if (auto ec = cs.record(cudaLaunchHostFunc(cs.get(), &reduce_delivery::call, d.get())))
      return ec;
    (void)d.release();  // reduce_delivery::call owns it now
    return {};
  }

 private:
  // Binds the calling thread to this backend's device (cheap; threads start on device 0).
  error_code use_device() const noexcept {
    if (cudaError_t e = cudaSetDevice(device_)) return device_failure(e);
    return {};
  }

  error_code run_weighted_sum(cuda_stream& cs, tensor_view out, const void* const* x,
                              const float* a, std::size_t k) {
    if (out.numel == 0) return {};
    if (auto ec = use_device()) return ec;
    return cs.record(cuda::launch_weighted_sum(cs.get(), sms_, out.type, out.data, x, a,
                                               static_cast<int>(k), out.numel));
  }

  int device_;
  int sms_;   // multiprocessors: the element-wise kernels size their grids from it
  int grid_;  // blocks of every reduction: fixed, so results repeat run to run
  std::string description_;
};

}  // namespace

namespace detail {

std::unique_ptr<backend> make_cuda_backend(std::string& why) {
  try {
    int count = 0;
    if (cudaError_t e = cudaGetDeviceCount(&count)) {
      (void)cudaGetLastError();
      why = "cudaGetDeviceCount failed: " + describe(e);
      return nullptr;
    }
    if (count <= 0) {
      why = "the CUDA runtime sees no device";
      return nullptr;
    }
    std::string refusals;
    for (int device = 0; device < count; ++device) {
      cudaDeviceProp props{};
      cudaError_t e = cudaSetDevice(device);
      if (e == cudaSuccess) e = cudaGetDeviceProperties(&props, device);
      int mode = cudaComputeModeDefault;
      if (e == cudaSuccess) e = cudaDeviceGetAttribute(&mode, cudaDevAttrComputeMode, device);
      if (e == cudaSuccess && mode == cudaComputeModeProhibited) e = cudaErrorDevicesUnavailable;
      if (e == cudaSuccess) e = cudaFree(nullptr);  // creates the context, or says why not
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        refusals += (refusals.empty() ? "device " : "; device ") + std::to_string(device) + ": " +
                    describe(e);
        continue;
      }
      auto b = std::make_unique<cuda_backend>(device, props);
      why = b->description();
      return b;
    }
    why = "no CUDA device could be used: " + refusals;
  } catch (const std::exception& ex) {
    why = std::string("the CUDA backend could not be set up: ") + ex.what();
  }
  return nullptr;
}

}  // namespace detail
}  // namespace mws::gpu
