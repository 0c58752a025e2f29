// The CUDA backend's kernels and their launchers (see kernels.cuh).
//
// Element-wise kernels share one layout: a scalar head of fewer than 8 elements until every
// operand reaches 16-byte alignment at the same element, then whole chunks of 8 elements moved
// with 16-byte loads and stores (one per chunk for f16/bf16, two for f32), then a scalar tail.
// When the operands can never be aligned together (views at unrelated element offsets), every
// element takes the scalar path. Indices are 64-bit throughout: buffers may exceed 2^31
// elements. All rounding is explicit (__fmul_rn, __fmaf_rn, __dadd_rn, ...), so the results do
// not depend on nvcc's contraction flags.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "gpu/cuda/kernels.cuh"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

// Kernel launches go through this macro so that tests/gpu/cuda_kernels_emulated_test.cpp can
// run these kernels on the CPU; its stand-in for cuda_runtime.h defines its own version.
#ifndef MWS_CUDA_LAUNCH
#define MWS_CUDA_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif

namespace mws::gpu::cuda {
namespace {

using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

constexpr int chunk_elems = 8;

template <dtype D>
inline constexpr int elem_bytes = D == dtype::f32 ? 4 : 2;

// ---- conversions: gpu/detail/half_bits.hpp, as gpu/dtype.hpp does them ----------------------

__device__ __forceinline__ u16 to_bf16(float f) {
  return detail::bf16_from_f32_bits(__float_as_uint(f));
}

__device__ __forceinline__ float from_bf16(u32 h) {
  return __uint_as_float(h << 16);
}

// On the device, the hardware conversion gives the same bits as the reference for every value
// but NaN (round to nearest even, overflow to infinity, exact subnormals, since -ftz=false) in
// one instruction; NaNs take the reference path, so their payloads match the CPU too.
__device__ __forceinline__ u16 to_f16(float f) {
#if defined(__CUDA_ARCH__)
  if (f == f) return __half_as_ushort(__float2half_rn(f));
#endif
  return detail::f16_from_f32_bits(__float_as_uint(f));
}

__device__ __forceinline__ float from_f16(u32 h) {
#if defined(__CUDA_ARCH__)
  if ((h & 0x7fffu) <= 0x7c00u)
    return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
#endif
  return __uint_as_float(detail::f32_bits_from_f16(static_cast<u16>(h)));
}

template <dtype D>
__device__ __forceinline__ float widen(u32 h) {
  return D == dtype::f16 ? from_f16(h) : from_bf16(h);
}

template <dtype D>
__device__ __forceinline__ u32 narrow(float f) {
  return D == dtype::f16 ? to_f16(f) : to_bf16(f);
}

// ---- one element ----------------------------------------------------------------------------

template <dtype D>
__device__ __forceinline__ float load1(const void* p, u64 i) {
  if constexpr (D == dtype::f32) {
    return static_cast<const float*>(p)[i];
  } else {
    return widen<D>(static_cast<const u16*>(p)[i]);
  }
}

template <dtype D>
__device__ __forceinline__ void store1(void* p, u64 i, float v) {
  if constexpr (D == dtype::f32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<u16*>(p)[i] = static_cast<u16>(narrow<D>(v));
  }
}

// ---- one chunk of 8 elements, 16-byte aligned -------------------------------------------------

template <dtype D>
struct chunk {
  uint4 w[elem_bytes<D> / 2];  // f32: two 16-byte words, f16/bf16: one
};

template <dtype D>
__device__ __forceinline__ chunk<D> load_chunk(const void* p, u64 first) {
  const auto* q =
      reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(p) + first * elem_bytes<D>);
  chunk<D> c;
#pragma unroll
  for (int j = 0; j < elem_bytes<D> / 2; ++j)
    c.w[j] = q[j];
  return c;
}

template <dtype D>
__device__ __forceinline__ void unpack(const chunk<D>& c, float (&f)[chunk_elems]) {
  if constexpr (D == dtype::f32) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      f[4 * j + 0] = __uint_as_float(c.w[j].x);
      f[4 * j + 1] = __uint_as_float(c.w[j].y);
      f[4 * j + 2] = __uint_as_float(c.w[j].z);
      f[4 * j + 3] = __uint_as_float(c.w[j].w);
    }
  } else {
    const u32 words[4] = {c.w[0].x, c.w[0].y, c.w[0].z, c.w[0].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // little-endian: element 2j is the low half
      f[2 * j] = widen<D>(words[j] & 0xffffu);
      f[2 * j + 1] = widen<D>(words[j] >> 16);
    }
  }
}

template <dtype D>
__device__ __forceinline__ void store_chunk(void* p, u64 first, const float (&f)[chunk_elems]) {
  auto* q = reinterpret_cast<uint4*>(static_cast<unsigned char*>(p) + first * elem_bytes<D>);
  if constexpr (D == dtype::f32) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      q[j] = make_uint4(__float_as_uint(f[4 * j]), __float_as_uint(f[4 * j + 1]),
                        __float_as_uint(f[4 * j + 2]), __float_as_uint(f[4 * j + 3]));
    }
  } else {
    u32 words[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      words[j] = narrow<D>(f[2 * j]) | (narrow<D>(f[2 * j + 1]) << 16);
    q[0] = make_uint4(words[0], words[1], words[2], words[3]);
  }
}

// ---- layout ---------------------------------------------------------------------------------

struct operand {
  const void* p;
  int bytes;  // element size
};

constexpr u64 no_common_alignment = ~u64{0};

// The first element index at which every operand is 16-byte aligned (less than 8), or
// no_common_alignment. Chunks of 8 elements keep that alignment (8 * 2 and 8 * 4 are multiples
// of 16), so every chunk after the head is aligned too.
u64 common_head(std::initializer_list<operand> ops) {
  const operand* narrowest = ops.begin();
  for (const operand& o : ops)
    if (o.bytes < narrowest->bytes) narrowest = &o;
  const auto base = reinterpret_cast<std::uintptr_t>(narrowest->p);
  if (base % static_cast<unsigned>(narrowest->bytes) != 0) return no_common_alignment;
  const u64 head = ((16 - base % 16) % 16) / static_cast<unsigned>(narrowest->bytes);
  for (const operand& o : ops) {
    const auto addr = reinterpret_cast<std::uintptr_t>(o.p);
    if ((addr + head * static_cast<unsigned>(o.bytes)) % 16 != 0) return no_common_alignment;
  }
  return head;
}

// Elements [0, head) and [head + 8 * chunks, n) go one by one, the chunks in between as vectors.
struct layout {
  u64 n;
  u64 head;
  u64 chunks;
};

layout plan(u64 n, u64 head) {
  if (head == no_common_alignment || head >= n) return {n, n, 0};
  return {n, head, (n - head) / chunk_elems};
}

// Enough blocks for `threads` threads, at most grid_max, at least one.
unsigned grid_for(u64 threads, int grid_max) {
  const u64 blocks = (threads + block_threads - 1) / block_threads;
  const u64 cap = grid_max > 0 ? static_cast<u64>(grid_max) : 1;
  return static_cast<unsigned>(blocks == 0 ? 1 : (blocks < cap ? blocks : cap));
}

__device__ __forceinline__ u64 global_thread() {
  return static_cast<u64>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ u64 grid_threads() {
  return static_cast<u64>(gridDim.x) * blockDim.x;
}

// ---- weighted sum -----------------------------------------------------------------------------

struct weighted_sum_args {
  void* out;
  const void* x[16];
  float a[16];
  layout l;
};

template <dtype D, int K>
__device__ __forceinline__ void weighted_sum_element(const weighted_sum_args& args, u64 i) {
  float acc = __fmul_rn(args.a[0], load1<D>(args.x[0], i));
#pragma unroll
  for (int k = 1; k < K; ++k)
    acc = __fmaf_rn(args.a[k], load1<D>(args.x[k], i), acc);
  store1<D>(args.out, i, acc);
}

template <dtype D, int K>
__device__ __forceinline__ void weighted_sum_chunk(const weighted_sum_args& args, u64 first,
                                                   const chunk<D>* in) {
  float acc[chunk_elems];
  float x[chunk_elems];
  unpack<D>(in[0], x);
#pragma unroll
  for (int e = 0; e < chunk_elems; ++e)
    acc[e] = __fmul_rn(args.a[0], x[e]);
#pragma unroll
  for (int k = 1; k < K; ++k) {
    unpack<D>(in[k], x);
#pragma unroll
    for (int e = 0; e < chunk_elems; ++e)
      acc[e] = __fmaf_rn(args.a[k], x[e], acc[e]);
  }
  store_chunk<D>(args.out, first, acc);
}

// Blocks per SM that a weighted-sum kernel is built to keep resident. f16 with many inputs needs
// more than 64 registers for its conversions (it spilled ~350 bytes per thread at 64), so it
// trades half the resident threads for twice the registers; 512 threads per SM with 16 loads
// of 16 bytes each in flight still saturate memory.
template <dtype D, int K>
inline constexpr int weighted_sum_blocks_per_sm = D == dtype::f16&& K > 8 ? 2 : blocks_per_sm;

// Grid-stride over chunks; each thread keeps U * K 16-byte loads in flight before it computes.
template <dtype D, int K, int U>
__global__ void __launch_bounds__(block_threads, (weighted_sum_blocks_per_sm<D, K>))
    weighted_sum_kernel(const weighted_sum_args args) {
  const u64 tid = global_thread();
  const u64 stride = grid_threads();
  const layout l = args.l;
  for (u64 i = tid; i < l.head; i += stride)
    weighted_sum_element<D, K>(args, i);
  for (u64 i = l.head + l.chunks * chunk_elems + tid; i < l.n; i += stride)
    weighted_sum_element<D, K>(args, i);
  u64 c = tid;
  for (; c + (U - 1) * stride < l.chunks; c += U * stride) {
    chunk<D> in[static_cast<std::size_t>(U)][static_cast<std::size_t>(K)];
#pragma unroll
    for (u64 u = 0; u < U; ++u) {
#pragma unroll
      for (int k = 0; k < K; ++k)
        in[u][k] = load_chunk<D>(args.x[k], l.head + (c + u * stride) * chunk_elems);
    }
#pragma unroll
    for (u64 u = 0; u < U; ++u)
      weighted_sum_chunk<D, K>(args, l.head + (c + u * stride) * chunk_elems, in[u]);
  }
  for (; c < l.chunks; c += stride) {
    chunk<D> in[static_cast<std::size_t>(K)];
#pragma unroll
    for (int k = 0; k < K; ++k)
      in[k] = load_chunk<D>(args.x[k], l.head + c * chunk_elems);
    weighted_sum_chunk<D, K>(args, l.head + c * chunk_elems, in);
  }
}

template <dtype D, int K>
cudaError_t launch_weighted_sum_k(cudaStream_t s, int sms, const weighted_sum_args& args) {
  // Few inputs give few loads per iteration; unrolling over chunks keeps enough bytes in flight.
  constexpr int U = K == 1 ? 4 : (K <= 3 ? 2 : 1);
  const u64 threads = args.l.chunks > 0 ? (args.l.chunks + U - 1) / U : args.l.n;
  const int grid_max = sms * weighted_sum_blocks_per_sm<D, K>;
  MWS_CUDA_LAUNCH(grid_for(threads, grid_max), block_threads, s, weighted_sum_kernel<D, K, U>)
  (args);
  return cudaGetLastError();
}

template <dtype D, int... Ks>
cudaError_t dispatch_terms(cudaStream_t s, int sms, const weighted_sum_args& args, int k,
                           std::integer_sequence<int, Ks...>) {
  cudaError_t r = cudaErrorInvalidValue;
  ((k == Ks + 1 ? (r = launch_weighted_sum_k<D, Ks + 1>(s, sms, args), true) : false) || ...);
  return r;
}

template <dtype D>
cudaError_t launch_weighted_sum_t(cudaStream_t s, int sms, void* out, const void* const* x,
                                  const float* a, int k, u64 n) {
  weighted_sum_args args{};
  args.out = out;
  for (int j = 0; j < k; ++j) {
    args.x[j] = x[j];
    args.a[j] = a[j];
  }
  // The output fixes the head; every input must reach alignment at the same element.
  u64 head = common_head({{out, elem_bytes<D>}});
  for (int j = 0; j < k && head != no_common_alignment; ++j)
    if (common_head({{out, elem_bytes<D>}, {x[j], elem_bytes<D>}}) != head)
      head = no_common_alignment;
  args.l = plan(n, head);
  return dispatch_terms<D>(s, sms, args, k, std::make_integer_sequence<int, 16>{});
}

// ---- sparse rows ------------------------------------------------------------------------------

struct mix_rows_args {
  const std::uint32_t* offsets;
  const std::uint32_t* columns;
  const float* weights;
  u64 rows;
  u64 width;
  const float* x;
  float* out;
};

// A block computes one tile of a row at a time: each thread V consecutive values (V = 4: one
// 16-byte load per term, where rows start 16-byte aligned), loads coalesced across the tile.
// Blocks stride over every (tile, row), rows fastest: the blocks in flight work on neighbouring
// rows of one tile, so where rows read near rows (rings, tori) each tile of a row comes from
// memory once and is read again from L2. Per value: acc = w_0 x_0, then fma in column order.
template <int V>
__global__ void __launch_bounds__(block_threads, blocks_per_sm)
    mix_rows_kernel(const mix_rows_args a) {
  constexpr u64 tile = u64{block_threads} * V;
  const u64 tiles = (a.width + tile - 1) / tile;
  for (u64 w = blockIdx.x; w < a.rows * tiles; w += gridDim.x) {
    const u64 i = w % a.rows;
    const u64 c = (w / a.rows) * tile + u64{threadIdx.x} * V;
    if (c >= a.width) continue;
    const std::uint32_t begin = a.offsets[i], end = a.offsets[i + 1];
    const float* x0 = a.x + a.columns[begin] * a.width + c;
    if constexpr (V == 4) {
      const uint4 v = *reinterpret_cast<const uint4*>(x0);
      const unsigned first[4] = {v.x, v.y, v.z, v.w};
      float acc[4];
      for (int l = 0; l < 4; ++l)
        acc[l] = __fmul_rn(a.weights[begin], __uint_as_float(first[l]));
#pragma unroll 4
      for (std::uint32_t k = begin + 1; k < end; ++k) {
        const uint4 u = *reinterpret_cast<const uint4*>(a.x + a.columns[k] * a.width + c);
        const unsigned more[4] = {u.x, u.y, u.z, u.w};
        for (int l = 0; l < 4; ++l)
          acc[l] = __fmaf_rn(a.weights[k], __uint_as_float(more[l]), acc[l]);
      }
      *reinterpret_cast<uint4*>(a.out + i * a.width + c) =
          make_uint4(__float_as_uint(acc[0]), __float_as_uint(acc[1]), __float_as_uint(acc[2]),
                     __float_as_uint(acc[3]));
    } else {
      float acc = __fmul_rn(a.weights[begin], *x0);
      for (std::uint32_t k = begin + 1; k < end; ++k)
        acc = __fmaf_rn(a.weights[k], a.x[a.columns[k] * a.width + c], acc);
      a.out[i * a.width + c] = acc;
    }
  }
}

// ---- conversion ---------------------------------------------------------------------------

template <dtype To, dtype From>
__global__ void __launch_bounds__(block_threads, blocks_per_sm)
    convert_kernel(void* dst, const void* src, const layout l) {
  const u64 tid = global_thread();
  const u64 stride = grid_threads();
  for (u64 i = tid; i < l.head; i += stride)
    store1<To>(dst, i, load1<From>(src, i));
  for (u64 i = l.head + l.chunks * chunk_elems + tid; i < l.n; i += stride)
    store1<To>(dst, i, load1<From>(src, i));
  for (u64 c = tid; c < l.chunks; c += stride) {
    const u64 first = l.head + c * chunk_elems;
    float f[chunk_elems];
    unpack<From>(load_chunk<From>(src, first), f);
    store_chunk<To>(dst, first, f);
  }
}

template <dtype To, dtype From>
cudaError_t launch_convert_t(cudaStream_t s, int sms, void* dst, const void* src, u64 n) {
  const layout l = plan(n, common_head({{dst, elem_bytes<To>}, {src, elem_bytes<From>}}));
  const u64 threads = l.chunks > 0 ? l.chunks : l.n;
  MWS_CUDA_LAUNCH(grid_for(threads, sms * blocks_per_sm), block_threads, s,
                  convert_kernel<To, From>)
  (dst, src, l);
  return cudaGetLastError();
}

// ---- reductions -------------------------------------------------------------------------------

template <reduce_op Op>
__device__ __forceinline__ double term(float x, float y) {
  const double xd = x;
  if constexpr (Op == reduce_op::sum) {
    return xd;
  } else if constexpr (Op == reduce_op::dot) {
    return __dmul_rn(xd, static_cast<double>(y));
  } else {
    const double d = __dsub_rn(xd, static_cast<double>(y));
    return __dmul_rn(d, d);
  }
}

// Loads chunk c (elements [8c, 8c + 8) cut at n) of x and, unless summing, y; returns how many
// elements it holds. Aligned whole chunks come as vectors, the rest element by element: the
// values, and so the result, are the same either way.
template <reduce_op Op, dtype D>
__device__ __forceinline__ int load_operands(const void* x, const void* y, u64 n, bool vectors,
                                             u64 c, float (&xs)[chunk_elems],
                                             float (&ys)[chunk_elems]) {
  const u64 first = c * chunk_elems;
  if (vectors && first + chunk_elems <= n) {
    unpack<D>(load_chunk<D>(x, first), xs);
    if constexpr (Op != reduce_op::sum) unpack<D>(load_chunk<D>(y, first), ys);
    return chunk_elems;
  }
  const int m = n - first < chunk_elems ? static_cast<int>(n - first) : chunk_elems;
#pragma unroll
  for (int e = 0; e < chunk_elems; ++e) {
    const u64 i = first + static_cast<u64>(e);
    xs[e] = e < m ? load1<D>(x, i) : 0.0f;
    if constexpr (Op != reduce_op::sum) ys[e] = e < m ? load1<D>(y, i) : 0.0f;
  }
  return m;
}

// Sums s[0, block_threads) into s[0] along a fixed tree.
__device__ __forceinline__ void block_sum(double* s) {
#pragma unroll
  for (unsigned width = block_threads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) s[threadIdx.x] = __dadd_rn(s[threadIdx.x], s[threadIdx.x + width]);
    __syncthreads();
  }
}

// Pass one: thread t of the grid adds chunks t, t + T, t + 2T, ... in that order (two loaded
// ahead), then each block sums its threads along a fixed tree into partials[block].
template <reduce_op Op, dtype D>
__global__ void __launch_bounds__(block_threads, blocks_per_sm)
    reduce_partials_kernel(const void* x, const void* y, u64 n, bool vectors, double* partials) {
  __shared__ double s[block_threads];
  const u64 tid = global_thread();
  const u64 stride = grid_threads();
  const u64 chunks = (n + chunk_elems - 1) / chunk_elems;
  double acc = 0.0;
  float x0[chunk_elems], x1[chunk_elems];
  float y0[chunk_elems] = {}, y1[chunk_elems] = {};  // stay zero, and unused, for sums
  for (u64 c = tid; c < chunks; c += 2 * stride) {
    const int m0 = load_operands<Op, D>(x, y, n, vectors, c, x0, y0);
    const int m1 =
        c + stride < chunks ? load_operands<Op, D>(x, y, n, vectors, c + stride, x1, y1) : 0;
#pragma unroll
    for (int e = 0; e < chunk_elems; ++e)
      if (e < m0) acc = __dadd_rn(acc, term<Op>(x0[e], y0[e]));
#pragma unroll
    for (int e = 0; e < chunk_elems; ++e)
      if (e < m1) acc = __dadd_rn(acc, term<Op>(x1[e], y1[e]));
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  block_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s[0];
}

// Pass two, one block: thread t adds partials t, t + 256, ... in order; then the fixed tree.
__global__ void __launch_bounds__(block_threads, blocks_per_sm)
    reduce_final_kernel(const double* partials, int count, double* result) {
  __shared__ double s[block_threads];
  double acc = 0.0;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += block_threads)
    acc = __dadd_rn(acc, partials[i]);
  s[threadIdx.x] = acc;
  __syncthreads();
  block_sum(s);
  if (threadIdx.x == 0) *result = s[0];
}

template <reduce_op Op, dtype D>
cudaError_t launch_reduce_t(cudaStream_t s, int grid, const void* x, const void* y, u64 n,
                            double* partials, double* result) {
  const bool vectors = reinterpret_cast<std::uintptr_t>(x) % 16 == 0 &&
                       (Op == reduce_op::sum || reinterpret_cast<std::uintptr_t>(y) % 16 == 0);
  MWS_CUDA_LAUNCH(static_cast<unsigned>(grid), block_threads, s, reduce_partials_kernel<Op, D>)
  (x, y, n, vectors, partials);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  MWS_CUDA_LAUNCH(1, block_threads, s, reduce_final_kernel)(partials, grid, result);
  return cudaGetLastError();
}

template <reduce_op Op>
cudaError_t launch_reduce_op(cudaStream_t s, int grid, dtype t, const void* x, const void* y, u64 n,
                             double* partials, double* result) {
  switch (t) {
    case dtype::f16:
      return launch_reduce_t<Op, dtype::f16>(s, grid, x, y, n, partials, result);
    case dtype::bf16:
      return launch_reduce_t<Op, dtype::bf16>(s, grid, x, y, n, partials, result);
    case dtype::f32:
      break;
  }
  return launch_reduce_t<Op, dtype::f32>(s, grid, x, y, n, partials, result);
}

}  // namespace

cudaError_t launch_weighted_sum(cudaStream_t s, int sms, dtype t, void* out, const void* const* x,
                                const float* a, int k, std::uint64_t n) {
  if (k < 1 || k > 16) return cudaErrorInvalidValue;
  (void)cudaGetLastError();  // a stale error of an earlier call is not this launch's
  if (n == 0) return cudaSuccess;
  switch (t) {
    case dtype::f16:
      return launch_weighted_sum_t<dtype::f16>(s, sms, out, x, a, k, n);
    case dtype::bf16:
      return launch_weighted_sum_t<dtype::bf16>(s, sms, out, x, a, k, n);
    case dtype::f32:
      break;
  }
  return launch_weighted_sum_t<dtype::f32>(s, sms, out, x, a, k, n);
}

cudaError_t launch_convert(cudaStream_t s, int sms, dtype to, void* dst, dtype from,
                           const void* src, std::uint64_t n) {
  if (n == 0) return cudaSuccess;
  (void)cudaGetLastError();  // a stale error of an earlier call is not this launch's
  constexpr auto f32 = dtype::f32, f16 = dtype::f16, bf16 = dtype::bf16;
  if (to == f32 && from == f16) return launch_convert_t<f32, f16>(s, sms, dst, src, n);
  if (to == f32 && from == bf16) return launch_convert_t<f32, bf16>(s, sms, dst, src, n);
  if (to == f16 && from == f32) return launch_convert_t<f16, f32>(s, sms, dst, src, n);
  if (to == f16 && from == bf16) return launch_convert_t<f16, bf16>(s, sms, dst, src, n);
  if (to == bf16 && from == f32) return launch_convert_t<bf16, f32>(s, sms, dst, src, n);
  if (to == bf16 && from == f16) return launch_convert_t<bf16, f16>(s, sms, dst, src, n);
  return cudaErrorInvalidValue;  // same dtype: the caller copies instead
}

cudaError_t launch_mix_rows(cudaStream_t s, int sms, const std::uint32_t* offsets,
                            const std::uint32_t* columns, const float* weights, std::uint32_t rows,
                            std::uint64_t width, const float* x, float* out) {
  if (rows == 0 || width == 0) return cudaSuccess;
  (void)cudaGetLastError();  // a stale error of an earlier call is not this launch's
  const mix_rows_args args{offsets, columns, weights, rows, width, x, out};
  // Rows start 16-byte aligned when the width is a multiple of 4 and the bases are.
  const bool wide = width % 4 == 0 && reinterpret_cast<std::uintptr_t>(x) % 16 == 0 &&
                    reinterpret_cast<std::uintptr_t>(out) % 16 == 0;
  const u64 tile = u64{block_threads} * (wide ? 4 : 1);
  const u64 tiles = (width + tile - 1) / tile;
  const unsigned grid = grid_for(rows * tiles * block_threads, sms * blocks_per_sm);
  if (wide) {
    MWS_CUDA_LAUNCH(grid, block_threads, s, mix_rows_kernel<4>)(args);
  } else {
    MWS_CUDA_LAUNCH(grid, block_threads, s, mix_rows_kernel<1>)(args);
  }
  return cudaGetLastError();
}

cudaError_t launch_reduce(cudaStream_t s, int grid, reduce_op op, dtype t, const void* x,
                          const void* y, std::uint64_t n, double* partials, double* result) {
  if (grid < 1) return cudaErrorInvalidValue;
  (void)cudaGetLastError();  // a stale error of an earlier call is not this launch's
  switch (op) {
    case reduce_op::dot:
      return launch_reduce_op<reduce_op::dot>(s, grid, t, x, y, n, partials, result);
    case reduce_op::squared_distance:
      return launch_reduce_op<reduce_op::squared_distance>(s, grid, t, x, y, n, partials, result);
    case reduce_op::sum:
      break;
  }
  return launch_reduce_op<reduce_op::sum>(s, grid, t, x, y, n, partials, result);
}

}  // namespace mws::gpu::cuda
