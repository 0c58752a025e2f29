// The CPU backend's loops. Compiled once per instruction-set level (see cpu_kernels.hpp): with
// MWS_KERNELS_V3 the main loops use AVX2/FMA/F16C intrinsics, otherwise plain C++. Built with
// -ffp-contract=off so that the compiler never fuses what the specification keeps separate.
#include "gpu/detail/cpu_kernels.hpp"

#include <cmath>
#include <cstdint>

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
float load1(const void* p, std::size_t i) noexcept {
  if constexpr (D == dtype::f32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (D == dtype::f16) {
    return f16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
  } else {
    return bf16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
  }
}

template <dtype D>
void store1(void* p, std::size_t i, float v) noexcept {
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
// ---- eight elements (AVX2) -----------------------------------------------------------------

constexpr std::size_t lanes = 8;

template <dtype D>
__m256 load8(const void* p, std::size_t i) noexcept {
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

// The vector form of f32_to_bf16: round to nearest even, NaN kept quiet.
__m128i f32x8_to_bf16(__m256 v) noexcept {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

template <dtype D>
void store8(void* p, std::size_t i, __m256 v, bool streaming) noexcept {
  if constexpr (D == dtype::f32) {
    float* q = static_cast<float*>(p) + i;
    streaming ? _mm256_stream_ps(q, v) : _mm256_storeu_ps(q, v);
  } else {
    auto* q = reinterpret_cast<__m128i*>(static_cast<std::uint16_t*>(p) + i);
    const __m128i h =
        D == dtype::f16 ? _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT) : f32x8_to_bf16(v);
    streaming ? _mm_stream_si128(q, h) : _mm_storeu_si128(q, h);
  }
}

// Streaming stores need aligned addresses: the number of leading elements to do one by one
// before `out` reaches that alignment, or SIZE_MAX when streaming does not apply.
template <dtype D>
std::size_t streaming_head(const void* out, std::size_t n) noexcept {
  constexpr std::size_t size = dtype_size(D);
  constexpr std::size_t align = lanes * size;
  const auto addr = reinterpret_cast<std::uintptr_t>(out);
  if (n * size < streaming_store_bytes_min || addr % size != 0) return SIZE_MAX;
  return ((align - addr % align) % align) / size;
}

// Runs an element-wise kernel whose output is `out`, streaming when that pays.
template <dtype D, class Scalar, class Vector>
void elementwise(void* out, std::size_t n, Scalar&& scalar, Vector&& vector) {
  const std::size_t head = streaming_head<D>(out, n);
  if (head == SIZE_MAX) {
    drive<lanes>(n, 0, scalar, [&](std::size_t i) { vector(i, false); });
  } else {
    drive<lanes>(n, head, scalar, [&](std::size_t i) { vector(i, true); });
    _mm_sfence();  // order the streaming stores before anything that follows
  }
}
#endif

// ---- element-wise kernels ------------------------------------------------------------------

template <dtype D>
void weighted_sum_t(void* out, const void* const* x, const float* a, std::size_t k, std::size_t n) {
  auto scalar = [&](std::size_t i) {
    float acc = a[0] * load1<D>(x[0], i);
    for (std::size_t j = 1; j < k; ++j)
      acc = std::fma(a[j], load1<D>(x[j], i), acc);
    store1<D>(out, i, acc);
  };
#if defined(MWS_KERNELS_V3)
  __m256 av[backend::max_terms];
  for (std::size_t j = 0; j < k; ++j)
    av[j] = _mm256_set1_ps(a[j]);
  elementwise<D>(out, n, scalar, [&](std::size_t i, bool streaming) {
    __m256 acc = _mm256_mul_ps(av[0], load8<D>(x[0], i));
    for (std::size_t j = 1; j < k; ++j)
      acc = _mm256_fmadd_ps(av[j], load8<D>(x[j], i), acc);
    store8<D>(out, i, acc, streaming);
  });
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
    store8<D>(y, i, _mm256_fmadd_ps(av, load8<D>(x, i), load8<D>(y, i)), streaming);
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
    store8<D>(x, i, _mm256_mul_ps(av, load8<D>(x, i)), streaming);
  });
#else
  drive<1>(n, 0, scalar, scalar);
#endif
}

template <dtype To, dtype From>
void convert_t(void* dst, const void* src, std::size_t n) {
  auto scalar = [&](std::size_t i) { store1<To>(dst, i, load1<From>(src, i)); };
#if defined(MWS_KERNELS_V3)
  elementwise<To>(dst, n, scalar, [&](std::size_t i, bool streaming) {
    store8<To>(dst, i, load8<From>(src, i), streaming);
  });
#else
  drive<1>(n, 0, scalar, scalar);
#endif
}

// ---- reductions: eight f64 lanes, lane = index mod 8, combined in one fixed order ----------

constexpr std::size_t reduction_lanes = 8;

template <reduction Op, dtype D>
double term1(const void* x, const void* y, std::size_t i) noexcept {
  const double xi = load1<D>(x, i);
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

}  // namespace

const cpu_kernels& MWS_KERNELS_ENTRY() noexcept {
  static constexpr cpu_kernels table{MWS_KERNELS_ISA, weighted_sum, axpy, scale, convert, reduce};
  return table;
}

}  // namespace mws::gpu::detail
