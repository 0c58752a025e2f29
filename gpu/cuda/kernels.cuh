// The CUDA backend's kernels, seen from the host: one launcher per operation. Private to
// gpu/cuda/. Every launcher enqueues on the stream it is given, never blocks, and returns the
// launch error (cudaSuccess when the work was enqueued).
//
// Numerics are those of gpu/backend.hpp, bit for bit with the CPU backend: weighted sums round
// as acc = a_0*x_0, then acc = fma(a_k, x_k, acc) in order; f16 and bf16 are widened to f32 and
// rounded back with the same bit logic as gpu/dtype.hpp. Reductions accumulate in f64 over a
// grid whose size is fixed per device, in a fixed order, with no atomics. One thing differs from
// an x86 CPU: where arithmetic produces a NaN, the GPU's is the canonical 0x7fffffff, while x86
// passes an input NaN's payload on; both are NaN. (Conversions do no arithmetic and keep
// payloads exactly as gpu/dtype.hpp does.)
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "gpu/dtype.hpp"

namespace mws::gpu::cuda {

// Threads per block of every kernel here.
inline constexpr int block_threads = 256;

// Blocks per streaming multiprocessor that every kernel here is built to keep resident
// (__launch_bounds__ caps registers at 64 per thread), so a grid of blocks_per_sm blocks per SM
// runs in one wave, with no half-empty second wave at the end. 1024 threads per SM, each with
// 64 to 256 bytes of loads in flight, are several times what saturates HBM (Little's law:
// ~3.35 TB/s x ~0.7 us over 132 SMs is ~18 KB per SM).
inline constexpr int blocks_per_sm = 4;

// Reductions (mirror gpu::reduction without pulling Boost into device code).
enum class reduce_op : std::uint8_t { sum, dot, squared_distance };

// out = sum_{j<k} a[j] * x[j], elementwise over n elements of type t, 1 <= k <= 16. `out` may be
// one of the x[j] (exactly); every pointer is aligned to its element size. `sms` is the
// device's multiprocessor count: the grid is at most what stays resident on them at once.
cudaError_t launch_weighted_sum(cudaStream_t s, int sms, dtype t, void* out, const void* const* x,
                                const float* a, int k, std::uint64_t n);

// dst = src converted from `from` to `to` (which differ), n elements, no overlap.
cudaError_t launch_convert(cudaStream_t s, int sms, dtype to, void* dst, dtype from,
                           const void* src, std::uint64_t n);

// For every row i < rows: out row i = the weighted sum, in weighted_sum's order, of x rows
// columns[k] with weights[k] over k in [offsets[i], offsets[i + 1]). Rows hold `width` f32
// values back to back; the CSR arrays are in device memory and checked; x and out do not overlap.
cudaError_t launch_mix_rows(cudaStream_t s, int sms, const std::uint32_t* offsets,
                            const std::uint32_t* columns, const float* weights, std::uint32_t rows,
                            std::uint64_t width, const float* x, float* out);

// *result = the reduction of x (and y, unless op is sum) over n elements of type t, accumulated
// in f64: pass one writes one partial per block into partials[0, grid), pass two combines them
// in one block. The value depends only on the data and `grid`, not on where the data lies.
cudaError_t launch_reduce(cudaStream_t s, int grid, reduce_op op, dtype t, const void* x,
                          const void* y, std::uint64_t n, double* partials, double* result);

}  // namespace mws::gpu::cuda
