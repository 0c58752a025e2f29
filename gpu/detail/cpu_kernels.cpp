// The CPU backend's loops. Compiled once per instruction-set level (see cpu_kernels.hpp): with
// MWS_KERNELS_V3 the main loops use AVX2/FMA/F16C intrinsics, otherwise plain C++. Built with
// -ffp-contract=off so that the compiler never fuses what the specification keeps separate.
#include "gpu/detail/cpu_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#if defined(MWS_KERNELS_V3)
#include <immintrin.h>
#define MWS_KERNELS_ENTRY cpu_kernels_x86_64_v3
#define MWS_KERNELS_ISA "x86-64-v3 (AVX2, FMA, F16C)"
#else
#define MWS_KERNELS_ENTRY cpu_kernels_baseline
#define MWS_KERNELS_ISA "baseline (portable C++)"
#endif

namespace mws::gpu::detail {
namespace {

// ---- one element ---------------------------------------------------------------------------

template <dtype D>
[[gnu::always_inline]] inline float load1(const void* p, std::size_t i) noexcept {
  if constexpr (D == dtype::f32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (D == dtype::f16) {
    return f16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
  } else {
    return bf16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
  }
}

template <dtype D>
[[gnu::always_inline]] inline void store1(void* p, std::size_t i, float v) noexcept {
  if constexpr (D == dtype::f32) {
    static_cast<float*>(p)[i] = v;
  } else if constexpr (D == dtype::f16) {
    static_cast<std::uint16_t*>(p)[i] = f32_to_f16(v);
  } else {
    static_cast<std::uint16_t*>(p)[i] = f32_to_bf16(v);
  }
}

// Runs scalar(i) for i < head, vector(i) for each whole block of `width` after that, and
// scalar(i) for the remaining tail.
template <std::size_t width, class Scalar, class Vector>
void drive(std::size_t n, std::size_t head, Scalar&& scalar, Vector&& vector) {
  std::size_t i = 0;
  for (; i < head && i < n; ++i)
    scalar(i);
  for (; i + width <= n; i += width)
    vector(i);
  for (; i < n; ++i)
    scalar(i);
}

#if defined(MWS_KERNELS_V3)
// ---- vectors (AVX2) --------------------------------------------------------------------------

constexpr std::size_t lanes = 8;   // f32 per __m256
constexpr std::size_t block = 16;  // elements per step of the element-wise kernels

// Eight elements in index order, for the reductions (whose lanes are fixed by index).
template <dtype D>
[[gnu::always_inline]] inline __m256 load8(const void* p, std::size_t i) noexcept {
  if constexpr (D == dtype::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else {
    const auto* q = reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(p) + i);
    const __m128i h = _mm_loadu_si128(q);
    if constexpr (D == dtype::f16) {
      return _mm256_cvtph_ps(h);
    } else {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
  }
}

// Sixteen elements as two f32 vectors. The order of elements inside the pair is the dtype's
// business (bf16 interleaves, which saves shuffles); store16 undoes exactly what load16 does,
// and element-wise arithmetic does not care.
struct f32x16 {
  __m256 lo, hi;
};

template <dtype D>
[[gnu::always_inline]] inline f32x16 load16(const void* p, std::size_t i) noexcept {
  if constexpr (D == dtype::f32) {
    const float* q = static_cast<const float*>(p) + i;
    return {_mm256_loadu_ps(q), _mm256_loadu_ps(q + lanes)};
  } else if constexpr (D == dtype::f16) {
    const auto* q = reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(p) + i);
    return {_mm256_cvtph_ps(_mm_loadu_si128(q)), _mm256_cvtph_ps(_mm_loadu_si128(q + 1))};
  } else {
    // bf16 is the top half of an f32: interleave zeros below each element.
    const auto* q = reinterpret_cast<const __m256i*>(static_cast<const std::uint16_t*>(p) + i);
    const __m256i h = _mm256_loadu_si256(q);
    const __m256i zero = _mm256_setzero_si256();
    return {_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, h)),
            _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, h))};
  }
}

// The vector form of f32_to_bf16 (round to nearest even, NaN kept quiet), leaving each result
// in the low half of its 32-bit lane.
[[gnu::always_inline]] inline __m256i round_to_bf16(__m256 v) noexcept {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  const __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet, nan), 16);
}

template <dtype D>
[[gnu::always_inline]] inline void store16(void* p, std::size_t i, f32x16 v,
                                           bool streaming) noexcept {
  if constexpr (D == dtype::f32) {
    float* q = static_cast<float*>(p) + i;
    if (streaming) {
      _mm256_stream_ps(q, v.lo);
      _mm256_stream_ps(q + lanes, v.hi);
    } else {
      _mm256_storeu_ps(q, v.lo);
      _mm256_storeu_ps(q + lanes, v.hi);
    }
    return;
  }
  __m256i h;
  if constexpr (D == dtype::f16) {
    h = _mm256_set_m128i(_mm256_cvtps_ph(v.hi, _MM_FROUND_TO_NEAREST_INT),
                         _mm256_cvtps_ph(v.lo, _MM_FROUND_TO_NEAREST_INT));
  } else {
    h = _mm256_packus_epi32(round_to_bf16(v.lo),
                            round_to_bf16(v.hi));  // undoes load16's interleave
  }
  auto* q = reinterpret_cast<__m256i*>(static_cast<std::uint16_t*>(p) + i);
  streaming ? _mm256_stream_si256(q, h) : _mm256_storeu_si256(q, h);
}

// Streaming stores need 32-byte aligned addresses: the number of leading elements to do one by
// one before `out` gets there, or SIZE_MAX when streaming does not apply.
template <dtype D>
std::size_t streaming_head(const void* out, std::size_t n) noexcept {
  constexpr std::size_t size = dtype_size(D);
  constexpr std::size_t align = 32;
  const auto addr = reinterpret_cast<std::uintptr_t>(out);
  if (n * size < streaming_store_bytes_min || addr % size != 0) return SIZE_MAX;
  return ((align - addr % align) % align) / size;
}

// Runs an element-wise kernel whose output is `out`, streaming when that pays; vector(i, streaming)
// handles elements [i, i + block * unroll).
template <dtype D, std::size_t unroll = 1, class Scalar, class Vector>
void elementwise(void* out, std::size_t n, Scalar&& scalar, Vector&& vector) {
  const std::size_t head = streaming_head<D>(out, n);
  if (head == SIZE_MAX) {
    drive<block * unroll>(n, 0, scalar, [&](std::size_t i) { vector(i, false); });
  } else {
    drive<block * unroll>(n, head, scalar, [&](std::size_t i) { vector(i, true); });
    _mm_sfence();  // order the streaming stores before anything that follows
  }
}

// Sixteen elements in index order (lo = 0..7, hi = 8..15) rearranged into load16<D>'s order.
template <dtype D>
[[gnu::always_inline]] inline f32x16 to_order(__m256 lo, __m256 hi) noexcept {
  if constexpr (D == dtype::bf16) {
    return {_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31)};
  } else {
    return {lo, hi};
  }
}

[[gnu::always_inline]] inline f32x16 mul(__m256 a, f32x16 x) noexcept {
  return {_mm256_mul_ps(a, x.lo), _mm256_mul_ps(a, x.hi)};
}
[[gnu::always_inline]] inline f32x16 fma(__m256 a, f32x16 x, f32x16 acc) noexcept {
  return {_mm256_fmadd_ps(a, x.lo, acc.lo), _mm256_fmadd_ps(a, x.hi, acc.hi)};
}
#endif

// ---- element-wise kernels ------------------------------------------------------------------

#if defined(MWS_KERNELS_V3)
// The vector loop with the number of terms fixed at compile time, so that the loop over terms
// unrolls and every input pointer and weight stays in a register. Each step carries at least two
// independent FMA chains, so their latency overlaps.
template <dtype D, std::size_t K, class Scalar>
void weighted_sum_k(void* out, const void* const* x, const float* a, std::size_t n,
                    Scalar&& scalar) {
  __m256 av[K];
  const void* xs[K];
  for (std::size_t j = 0; j < K; ++j) {
    av[j] = _mm256_set1_ps(a[j]);
    xs[j] = x[j];
  }
  // 256 bytes of every input and of the output per step (64 f32 or 128 bf16/f16 elements). The
  // accumulators then live in L1 rather than registers, but inputs are read and the output
  // streamed out in runs of whole cache lines, which the hardware prefetchers and the
  // write-combining buffers of streaming stores handle best (docs/BENCHMARKS.md).
  constexpr std::size_t unroll = 256 / (block * dtype_size(D));
  elementwise<D, unroll>(out, n, scalar, [&](std::size_t i, bool streaming) {
    f32x16 acc[unroll];
    for (std::size_t u = 0; u < unroll; ++u)
      acc[u] = mul(av[0], load16<D>(xs[0], i + u * block));
    for (std::size_t j = 1; j < K; ++j) {
      for (std::size_t u = 0; u < unroll; ++u) {
        acc[u] = fma(av[j], load16<D>(xs[j], i + u * block), acc[u]);
      }
    }
    for (std::size_t u = 0; u < unroll; ++u)
      store16<D>(out, i + u * block, acc[u], streaming);
  });
}

template <dtype D, class Scalar, std::size_t... K>
void weighted_sum_dispatch(void* out, const void* const* x, const float* a, std::size_t k,
                           std::size_t n, Scalar&& scalar, std::index_sequence<K...>) {
  ((k == K + 1 ? weighted_sum_k<D, K + 1>(out, x, a, n, scalar) : void()), ...);
}
#endif

template <dtype D>
void weighted_sum_t(void* out, const void* const* x, const float* a, std::size_t k, std::size_t n) {
  auto scalar = [&](std::size_t i) {
    float acc = a[0] * load1<D>(x[0], i);
    for (std::size_t j = 1; j < k; ++j)
      acc = std::fma(a[j], load1<D>(x[j], i), acc);
    store1<D>(out, i, acc);
  };
#if defined(MWS_KERNELS_V3)
  weighted_sum_dispatch<D>(out, x, a, k, n, scalar, std::make_index_sequence<backend::max_terms>());
#else
  drive<1>(n, 0, scalar, scalar);
#endif
}

template <dtype D>
void axpy_t(float a, const void* x, void* y, std::size_t n) {
  auto scalar = [&](std::size_t i) {
    store1<D>(y, i, std::fma(a, load1<D>(x, i), load1<D>(y, i)));
  };
#if defined(MWS_KERNELS_V3)
  const __m256 av = _mm256_set1_ps(a);
  elementwise<D>(y, n, scalar, [&](std::size_t i, bool streaming) {
    store16<D>(y, i, fma(av, load16<D>(x, i), load16<D>(y, i)), streaming);
  });
#else
  drive<1>(n, 0, scalar, scalar);
#endif
}

template <dtype D>
void scale_t(float a, void* x, std::size_t n) {
  auto scalar = [&](std::size_t i) { store1<D>(x, i, a * load1<D>(x, i)); };
#if defined(MWS_KERNELS_V3)
  const __m256 av = _mm256_set1_ps(a);
  elementwise<D>(x, n, scalar, [&](std::size_t i, bool streaming) {
    store16<D>(x, i, mul(av, load16<D>(x, i)), streaming);
  });
#else
  drive<1>(n, 0, scalar, scalar);
#endif
}

template <dtype To, dtype From>
void convert_t(void* dst, const void* src, std::size_t n) {
  auto scalar = [&](std::size_t i) { store1<To>(dst, i, load1<From>(src, i)); };
#if defined(MWS_KERNELS_V3)
  // load16 and store16 must agree on the element order, which only holds within one dtype;
  // across dtypes go through the index-ordered eight-element form.
  elementwise<To>(dst, n, scalar, [&](std::size_t i, bool streaming) {
    if constexpr (To == From) {
      store16<To>(dst, i, load16<From>(src, i), streaming);
    } else {
      store16<To>(dst, i, to_order<To>(load8<From>(src, i), load8<From>(src, i + lanes)),
                  streaming);
    }
  });
#else
  drive<1>(n, 0, scalar, scalar);
#endif
}

// ---- reductions: eight f64 lanes, lane = index mod 8, combined in one fixed order ----------

constexpr std::size_t reduction_lanes = 8;

template <reduction Op, dtype D>
double term1(const void* x, const void* y, std::size_t i) noexcept {
  const double xi = static_cast<double>(load1<D>(x, i));
  if constexpr (Op == reduction::sum) {
    return xi;
  } else if constexpr (Op == reduction::dot) {
    return xi * static_cast<double>(load1<D>(y, i));
  } else {
    const double d = xi - static_cast<double>(load1<D>(y, i));
    return d * d;
  }
}

template <reduction Op, dtype D>
double reduce_t(const void* x, const void* y, std::size_t n) {
  double lane[reduction_lanes] = {};
  std::size_t i = 0;
#if defined(MWS_KERNELS_V3)
  __m256d lo = _mm256_setzero_pd();  // lanes 0..3
  __m256d hi = _mm256_setzero_pd();  // lanes 4..7
  for (; i + lanes <= n; i += lanes) {
    const __m256 xv = load8<D>(x, i);
    __m256d xl = _mm256_cvtps_pd(_mm256_castps256_ps128(xv));
    __m256d xh = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
    if constexpr (Op != reduction::sum) {
      const __m256 yv = load8<D>(y, i);
      const __m256d yl = _mm256_cvtps_pd(_mm256_castps256_ps128(yv));
      const __m256d yh = _mm256_cvtps_pd(_mm256_extractf128_ps(yv, 1));
      if constexpr (Op == reduction::dot) {
        xl = _mm256_mul_pd(xl, yl);
        xh = _mm256_mul_pd(xh, yh);
      } else {
        xl = _mm256_sub_pd(xl, yl);
        xh = _mm256_sub_pd(xh, yh);
        xl = _mm256_mul_pd(xl, xl);
        xh = _mm256_mul_pd(xh, xh);
      }
    }
    lo = _mm256_add_pd(lo, xl);
    hi = _mm256_add_pd(hi, xh);
  }
  _mm256_storeu_pd(lane, lo);
  _mm256_storeu_pd(lane + 4, hi);
#else
  for (; i + reduction_lanes <= n; i += reduction_lanes) {
    for (std::size_t l = 0; l < reduction_lanes; ++l)
      lane[l] += term1<Op, D>(x, y, i + l);
  }
#endif
  for (std::size_t l = 0; i < n; ++i, ++l)
    lane[l] += term1<Op, D>(x, y, i);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// ---- dtype dispatch ------------------------------------------------------------------------

// Calls f.template operator()<D>() for the runtime dtype t.
template <class F>
decltype(auto) with_dtype(dtype t, F&& f) {
  switch (t) {
    case dtype::f16:
      return f.template operator()<dtype::f16>();
    case dtype::bf16:
      return f.template operator()<dtype::bf16>();
    case dtype::f32:
      break;
  }
  return f.template operator()<dtype::f32>();
}

void weighted_sum(dtype t, void* out, const void* const* x, const float* a, std::size_t k,
                  std::size_t n) {
  with_dtype(t, [&]<dtype D>() { weighted_sum_t<D>(out, x, a, k, n); });
}

void axpy(dtype t, float a, const void* x, void* y, std::size_t n) {
  with_dtype(t, [&]<dtype D>() { axpy_t<D>(a, x, y, n); });
}

void scale(dtype t, float a, void* x, std::size_t n) {
  with_dtype(t, [&]<dtype D>() { scale_t<D>(a, x, n); });
}

void convert(dtype to, void* dst, dtype from, const void* src, std::size_t n) {
  with_dtype(to, [&]<dtype To>() {
    with_dtype(from, [&]<dtype From>() { convert_t<To, From>(dst, src, n); });
  });
}

double reduce(reduction op, dtype t, const void* x, const void* y, std::size_t n) {
  return with_dtype(t, [&]<dtype D>() {
    switch (op) {
      case reduction::dot:
        return reduce_t<reduction::dot, D>(x, y, n);
      case reduction::squared_distance:
        return reduce_t<reduction::squared_distance, D>(x, y, n);
      case reduction::sum:
        break;
    }
    return reduce_t<reduction::sum, D>(x, y, n);
  });
}

// ---- sparse rows -----------------------------------------------------------------------------

// A chunk of `chunk` outputs stays in registers while every term of the row is folded in, so
// each output is stored once; the order of operations per element is weighted_sum's.
constexpr std::size_t chunk = 16;

// How far ahead the rows that are read first are prefetched: those are the largest columns of
// the rows to come, a pattern the hardware prefetchers follow late. 1-4 KiB measured alike on a
// 2-core EPYC.
constexpr std::size_t prefetch_bytes = 2048;

// Stores a finished chunk, past the caches when `streaming`: callers stream rows through memory
// (the simulator's batched rounds), so the output is not read again before it is evicted, and
// a normal store would first fetch the line and push the rows being read out of cache.
[[gnu::always_inline]] inline void store_chunk(float* out, const float* acc,
                                               [[maybe_unused]] bool streaming) noexcept {
#if defined(MWS_KERNELS_V3)
  if (streaming) {
    for (std::size_t l = 0; l < chunk; l += 8)
      _mm256_stream_ps(out + l, _mm256_loadu_ps(acc + l));
    return;
  }
#endif
  for (std::size_t l = 0; l < chunk; ++l)
    out[l] = acc[l];
}

void mix_rows(const std::uint32_t* offsets, const std::uint32_t* columns, const float* weights,
              std::uint32_t n, std::size_t width, const float* x, float* y) {
  const bool streaming = reinterpret_cast<std::uintptr_t>(y) % 32 == 0 && width % 8 == 0;
  const auto ahead = static_cast<std::uint32_t>(
      std::max<std::size_t>(2, prefetch_bytes / (width * sizeof(float))));
  for (std::uint32_t i = 0; i < n; ++i) {
    if (i + ahead < n) {
      const float* next = x + std::size_t{columns[offsets[i + ahead + 1] - 1]} * width;
      for (std::size_t c = 0; c < width; c += 64 / sizeof(float))
        __builtin_prefetch(next + c);
    }
    float* __restrict out = y + std::size_t{i} * width;
    const std::uint32_t begin = offsets[i], end = offsets[i + 1];
    const float a0 = weights[begin];
    const float* __restrict src0 = x + std::size_t{columns[begin]} * width;
    std::size_t c = 0;
    for (; c + chunk <= width; c += chunk) {
      float acc[chunk];
      for (std::size_t l = 0; l < chunk; ++l)
        acc[l] = a0 * src0[c + l];
      for (std::uint32_t k = begin + 1; k < end; ++k) {
        const float a = weights[k];
        const float* __restrict src = x + std::size_t{columns[k]} * width + c;
        for (std::size_t l = 0; l < chunk; ++l)
          acc[l] = std::fma(a, src[l], acc[l]);
      }
      store_chunk(out + c, acc, streaming);
    }
    for (; c < width; ++c) {
      float acc = a0 * src0[c];
      for (std::uint32_t k = begin + 1; k < end; ++k)
        acc = std::fma(weights[k], x[std::size_t{columns[k]} * width + c], acc);
      out[c] = acc;
    }
  }
#if defined(MWS_KERNELS_V3)
  if (streaming) _mm_sfence();  // order the streaming stores before anything that follows
#endif
}

}  // namespace

const cpu_kernels& MWS_KERNELS_ENTRY() noexcept {
  static constexpr cpu_kernels table{MWS_KERNELS_ISA, weighted_sum, axpy,    scale,
                                     convert,         reduce,       mix_rows};
  return table;
}

}  // namespace mws::gpu::detail
