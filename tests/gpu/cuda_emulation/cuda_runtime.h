// A stand-in for <cuda_runtime.h>, just large enough to compile gpu/cuda/kernels.cu as plain C++
// and run its kernels on the CPU, so that their index arithmetic, head and tail handling,
// alignment decisions, packing, conversions and reduction order are tested on every machine,
// sanitizers included. Test-only; nothing outside tests/gpu includes it.
//
// A launch runs its blocks one after another; the 256 threads of a block are real threads of a
// pool, so __syncthreads() is a real barrier and __shared__ arrays (function-local statics) are
// shared by the block. Device intrinsics map to their IEEE meaning on the host (the test is
// built with -ffp-contract=off, so a*b is rounded on its own).
#pragma once

#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define CUDART_CB

enum cudaError_t : int { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
struct mws_emulated_stream;
using cudaStream_t = mws_emulated_stream*;

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return {x, y, z, w};
}

struct dim3 {
  unsigned x = 1;
};

inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fmaf_rn(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dsub_rn(double a, double b) {
  return a - b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline unsigned __float_as_uint(float f) {
  return std::bit_cast<unsigned>(f);
}
inline float __uint_as_float(unsigned u) {
  return std::bit_cast<float>(u);
}
inline float __uint2float_rn(unsigned u) {
  return static_cast<float>(u);
}

namespace mws_emulation {

inline constexpr unsigned pool_threads = 256;

inline thread_local dim3 block_index;
inline thread_local dim3 thread_index;
inline dim3 block_size;
inline dim3 grid_size;

// pool_threads workers that run one block at a time.
class block_pool {
 public:
  block_pool() {
    for (unsigned t = 0; t < pool_threads; ++t) {
      workers_.emplace_back([this, t] {
        thread_index.x = t;
        for (;;) {
          start_.arrive_and_wait();
          if (stop_) return;
          task_();
          end_.arrive_and_wait();
        }
      });
    }
  }
  block_pool(const block_pool&) = delete;
  block_pool& operator=(const block_pool&) = delete;
  ~block_pool() {
    stop_ = true;
    start_.arrive_and_wait();
  }

  void run_block(unsigned block, const std::function<void()>& body) {
    task_ = [&body, block] {
      block_index.x = block;
      body();
    };
    start_.arrive_and_wait();
    end_.arrive_and_wait();
  }

  void sync() { sync_.arrive_and_wait(); }

 private:
  std::barrier<> start_{pool_threads + 1};
  std::barrier<> end_{pool_threads + 1};
  std::barrier<> sync_{pool_threads};
  std::function<void()> task_;
  bool stop_ = false;
  std::vector<std::jthread> workers_;
};

inline block_pool& pool() {
  static block_pool p;
  return p;
}

template <class... Params>
auto launcher(unsigned grid, unsigned block, void (*kernel)(Params...)) {
  return [=](auto&&... args) {
    if (block != pool_threads) std::abort();  // the kernels are written for 256 threads
    grid_size.x = grid;
    block_size.x = block;
    for (unsigned b = 0; b < grid; ++b)
      pool().run_block(b, [&] { kernel(args...); });
  };
}

}  // namespace mws_emulation

#define blockIdx ::mws_emulation::block_index
#define threadIdx ::mws_emulation::thread_index
#define blockDim ::mws_emulation::block_size
#define gridDim ::mws_emulation::grid_size

inline void __syncthreads() {
  mws_emulation::pool().sync();
}

inline cudaError_t cudaGetLastError() {
  return cudaSuccess;
}

#define MWS_CUDA_LAUNCH(grid, block, stream, ...)                                       \
  (static_cast<void>(stream),                                                           \
   ::mws_emulation::launcher(static_cast<unsigned>(grid), static_cast<unsigned>(block), \
                             __VA_ARGS__))
