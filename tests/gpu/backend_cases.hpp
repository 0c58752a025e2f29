// Conformance cases that every compute backend must pass, written once and run against the CPU
// backend (cpu_backend_test.cpp) and the CUDA backend (cuda_backend_test.cpp). Inputs are small
// integers and power-of-two weights, so the exact answer is known and checked bit for bit.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <future>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "gpu/backend.hpp"

namespace mws::gpu::testing {

inline constexpr dtype all_dtypes[] = {dtype::f32, dtype::f16, dtype::bf16};

// Lengths around the vector width and the streaming-store threshold (1 MiB).
inline constexpr std::size_t lengths[] = {0, 1, 2, 7, 8, 9, 15, 17, 63, 1000, 4099, 600'003};

// Host copy of a tensor, stored in its dtype.
struct host_tensor {
  dtype type = dtype::f32;
  std::vector<unsigned char> bytes;

  std::size_t numel() const { return bytes.size() / dtype_size(type); }
  float at(std::size_t i) const {
    if (type == dtype::f32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      return f;
    }
    std::uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return type == dtype::f16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
  // The stored bit pattern of element i, for bitwise comparisons.
  std::uint32_t bits(std::size_t i) const {
    std::uint32_t u = 0;
    std::memcpy(&u, bytes.data() + dtype_size(type) * i, dtype_size(type));
    return u;
  }
  const_tensor_view view() const { return {bytes.data(), numel(), type, memory_space::host}; }
};

inline void store_as(dtype t, unsigned char* p, float v) {
  if (t == dtype::f32) {
    std::memcpy(p, &v, 4);
  } else {
    const std::uint16_t h = t == dtype::f16 ? f32_to_f16(v) : f32_to_bf16(v);
    std::memcpy(p, &h, 2);
  }
}

inline host_tensor make_host(dtype t, const std::vector<float>& values) {
  host_tensor h{t, std::vector<unsigned char>(values.size() * dtype_size(t))};
  for (std::size_t i = 0; i < values.size(); ++i)
    store_as(t, h.bytes.data() + i * dtype_size(t), values[i]);
  return h;
}

// The value v rounded to dtype t, as a float.
inline float round_to(dtype t, float v) {
  return make_host(t, {v}).at(0);
}

// Small integers in [-8, 8]: exact in every dtype, and sums of 16 of them times quarter
// weights are exact in f32.
inline std::vector<float> small_integers(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-8, 8);
  std::vector<float> v(n);
  for (auto& x : v)
    x = static_cast<float>(d(rng));
  return v;
}

// A device buffer holding h (for the CPU backend, device memory is host memory).
inline buffer upload(backend& b, stream& s, const host_tensor& h) {
  auto buf = b.allocate(h.type, h.numel(), memory_space::device);
  REQUIRE(buf.has_value());
  REQUIRE_FALSE(b.copy(s, buf->view(), h.view()));
  return std::move(*buf);
}

inline host_tensor download(backend& b, stream& s, const_tensor_view v) {
  host_tensor h{v.type, std::vector<unsigned char>(v.bytes())};
  tensor_view dst{h.bytes.data(), v.numel, v.type, memory_space::host};
  REQUIRE_FALSE(b.copy(s, dst, v));
  REQUIRE_FALSE(s.synchronize());
  return h;
}

inline void weighted_sum_is_exact(backend& b) {
  auto s = b.make_stream().value();
  const float weights[] = {0.5f, -0.25f, 1.0f, 2.0f, -1.0f, 0.75f, 0.125f, -0.5f};
  for (dtype t : all_dtypes) {
    for (std::size_t n : lengths) {
      for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{5}, std::size_t{16}}) {
        CAPTURE(to_string(t));
        CAPTURE(n);
        CAPTURE(k);
        std::vector<buffer> inputs;
        std::vector<weighted_term> terms;
        std::vector<double> expected(n, 0.0);
        for (std::size_t j = 0; j < k; ++j) {
          const auto values = small_integers(n, static_cast<std::uint32_t>(17 * j + n));
          inputs.push_back(upload(b, *s, make_host(t, values)));
          terms.push_back({inputs.back().view(), weights[j % 8]});
          for (std::size_t i = 0; i < n; ++i)
            expected[i] += static_cast<double>(weights[j % 8]) * static_cast<double>(values[i]);
        }
        auto out = b.allocate(t, n, memory_space::device).value();
        REQUIRE_FALSE(b.weighted_sum(*s, out.view(), terms));
        const host_tensor got = download(b, *s, out.view());
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < n; ++i) {
          wrong += got.at(i) != round_to(t, static_cast<float>(expected[i]));
        }
        CHECK(wrong == 0);
      }
    }
  }
}

inline void weighted_sum_in_place_and_misaligned(backend& b) {
  auto s = b.make_stream().value();
  for (dtype t : all_dtypes) {
    CAPTURE(to_string(t));
    const std::size_t n = 700'001;
    const auto xv = small_integers(n + 1, 1);
    const auto yv = small_integers(n + 1, 2);
    auto x = upload(b, *s, make_host(t, xv));
    auto y = upload(b, *s, make_host(t, yv));
    // Offset by one element so the output starts off any vector alignment.
    const tensor_view xs = x.view().slice(1, n);
    const weighted_term terms[] = {{xs, 0.5f}, {y.view().slice(1, n), 0.5f}};
    REQUIRE_FALSE(b.weighted_sum(*s, xs, terms));
    const host_tensor got = download(b, *s, x.view());
    CHECK(got.at(0) == xv[0]);  // the element before the slice is untouched
    std::size_t wrong = 0;
    for (std::size_t i = 1; i <= n; ++i)
      wrong += got.at(i) != 0.5f * xv[i] + 0.5f * yv[i];
    CHECK(wrong == 0);
  }
}

inline void axpy_and_scale_are_exact(backend& b) {
  auto s = b.make_stream().value();
  for (dtype t : all_dtypes) {
    for (std::size_t n : lengths) {
      CAPTURE(to_string(t));
      CAPTURE(n);
      const auto xv = small_integers(n, 3);
      const auto yv = small_integers(n, 4);
      auto x = upload(b, *s, make_host(t, xv));
      auto y = upload(b, *s, make_host(t, yv));
      REQUIRE_FALSE(b.axpy(*s, -0.75f, x.view(), y.view()));
      REQUIRE_FALSE(b.scale(*s, 0.5f, x.view()));
      const host_tensor gy = download(b, *s, y.view());
      const host_tensor gx = download(b, *s, x.view());
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < n; ++i) {
        wrong += gy.at(i) != round_to(t, yv[i] - 0.75f * xv[i]);
        wrong += gx.at(i) != 0.5f * xv[i];
      }
      CHECK(wrong == 0);
    }
  }
}

inline void reductions_are_exact(backend& b) {
  auto s = b.make_stream().value();
  for (dtype t : all_dtypes) {
    for (std::size_t n : lengths) {
      CAPTURE(to_string(t));
      CAPTURE(n);
      const auto xv = small_integers(n, 5);
      const auto yv = small_integers(n, 6);
      double sum = 0, dot = 0, dist = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const double xi = xv[i], yi = yv[i];
        sum += xi;
        dot += xi * yi;
        dist += (xi - yi) * (xi - yi);
      }
      auto x = upload(b, *s, make_host(t, xv));
      auto y = upload(b, *s, make_host(t, yv));
      double got_sum = -1, got_dot = -1, got_dist = -1;
      REQUIRE_FALSE(b.reduce(*s, reduction::sum, x.view(), {}, &got_sum));
      REQUIRE_FALSE(b.reduce(*s, reduction::dot, x.view(), y.view(), &got_dot));
      REQUIRE_FALSE(b.reduce(*s, reduction::squared_distance, x.view(), y.view(), &got_dist));
      REQUIRE_FALSE(s->synchronize());
      CHECK(got_sum == sum);
      CHECK(got_dot == dot);
      CHECK(got_dist == dist);
    }
  }
}

// Every pair of dtypes, on values each dtype holds exactly, plus rounding of arbitrary bit
// patterns (NaN, infinities, subnormals, ties) against the scalar reference conversions.
inline void conversions_match_the_reference(backend& b) {
  auto s = b.make_stream().value();
  std::mt19937 rng(7);
  std::vector<float> arbitrary(4099);
  for (auto& f : arbitrary) {
    const auto u = static_cast<std::uint32_t>(rng());
    std::memcpy(&f, &u, 4);
  }
  const float specials[] = {0.0f,           -0.0f,          1.0f,      65504.0f,
                            65520.0f,       0x1p-24f,       0x1p-25f,  0x1.8p-24f,
                            1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 0x1p-149f, 3.0e38f};
  for (std::size_t i = 0; i < std::size(specials); ++i)
    arbitrary[i] = specials[i];
  for (dtype to : all_dtypes) {
    for (dtype from : all_dtypes) {
      CAPTURE(to_string(to));
      CAPTURE(to_string(from));
      const host_tensor src =
          make_host(from, from == dtype::f32 ? arbitrary : small_integers(4099, 8));
      auto x = upload(b, *s, src);
      auto y = b.allocate(to, src.numel(), memory_space::device).value();
      REQUIRE_FALSE(b.convert(*s, y.view(), x.view()));
      const host_tensor got = download(b, *s, y.view());
      const host_tensor want = [&] {
        std::vector<float> v(src.numel());
        for (std::size_t i = 0; i < v.size(); ++i)
          v[i] = src.at(i);
        return make_host(to, v);
      }();
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < src.numel(); ++i)
        wrong += got.bits(i) != want.bits(i);
      CHECK(wrong == 0);
    }
  }
}

// `n` arbitrary f32 bit patterns (seeded) led by the values conversions get wrong first: signed
// zeros, infinities, the f16 limits and ties, subnormals.
inline std::vector<float> conversion_patterns(std::size_t n) {
  std::vector<float> v(n);
  std::mt19937 rng(5);
  for (auto& f : v)
    f = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
  const float specials[] = {0.0f,      -0.0f,          INFINITY,       -INFINITY,
                            65504.0f,  65519.0f,       65520.0f,       0x1p-24f,
                            0x1p-25f,  0x1.8p-24f,     0x1p-149f,      0x1p-126f,
                            -0x1p-15f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 1.0f + 0x1p-11f};
  for (std::size_t i = 0; i < std::size(specials) && i < n; ++i)
    v[i] = specials[i];
  return v;
}

// Every f16 and bf16 bit pattern and a million random f32 patterns (NaNs, infinities,
// subnormals, ties), at several element offsets, converted between every pair of dtypes.
inline void every_bit_pattern_converts_like_the_reference(backend& b) {
  backend* gpu = &b;
  auto gs = b.make_stream().value();
  const std::vector<float> f32_patterns = conversion_patterns(std::size_t{1} << 20);
  for (dtype from : all_dtypes) {
    for (dtype to : all_dtypes) {
      for (std::size_t src_off : {std::size_t{0}, std::size_t{1}, std::size_t{3}}) {
        for (std::size_t dst_off : {std::size_t{0}, std::size_t{1}, std::size_t{6}}) {
          CAPTURE(to_string(from));
          CAPTURE(to_string(to));
          CAPTURE(src_off);
          CAPTURE(dst_off);
          host_tensor src{from, {}};
          if (from == dtype::f32) {
            src.bytes.resize(f32_patterns.size() * 4);
            std::memcpy(src.bytes.data(), f32_patterns.data(), src.bytes.size());
          } else {
            src.bytes.resize(0x10000 * 2);
            for (std::uint32_t h = 0; h < 0x10000; ++h) {
              const auto u = static_cast<std::uint16_t>(h);
              std::memcpy(src.bytes.data() + 2 * h, &u, 2);
            }
          }
          const std::size_t n = src.numel() - src_off;
          buffer sd = upload(*gpu, *gs, src);
          auto dd = gpu->allocate(to, n + dst_off, memory_space::device).value();
          REQUIRE_FALSE(
              gpu->convert(*gs, dd.view().slice(dst_off, n), sd.view().slice(src_off, n)));
          const host_tensor got = download(*gpu, *gs, dd.view().slice(dst_off, n));
          std::size_t wrong = 0;
          for (std::size_t i = 0; i < n; ++i) {
            std::uint32_t bits = 0;
            if (from == to) {
              bits = src.bits(src_off + i);
            } else {
              const float f = src.at(src_off + i);
              bits = to == dtype::f32   ? std::bit_cast<std::uint32_t>(f)
                     : to == dtype::f16 ? f32_to_f16(f)
                                        : f32_to_bf16(f);
            }
            wrong += got.bits(i) != bits;
          }
          CHECK(wrong == 0);
        }
      }
    }
  }
}

inline void bad_calls_are_refused(backend& b) {
  auto s = b.make_stream().value();
  auto x = b.allocate(dtype::f32, 64, memory_space::device).value();
  auto y = b.allocate(dtype::f32, 63, memory_space::device).value();
  auto h = b.allocate(dtype::bf16, 64, memory_space::device).value();
  const weighted_term mismatched[] = {{x.view(), 1.0f}, {y.view(), 1.0f}};
  CHECK(b.weighted_sum(*s, x.view(), mismatched) == errc::size_mismatch);
  const weighted_term mixed[] = {{x.view(), 1.0f}, {h.view(), 1.0f}};
  CHECK(b.weighted_sum(*s, x.view(), mixed) == errc::dtype_mismatch);
  CHECK(b.weighted_sum(*s, x.view(), {}) == errc::bad_term_count);
  std::vector<weighted_term> many(backend::max_terms + 1, weighted_term{x.view(), 1.0f});
  CHECK(b.weighted_sum(*s, x.view(), many) == errc::bad_term_count);
  const weighted_term shifted[] = {{x.view().slice(1, 32), 1.0f}};
  CHECK(b.weighted_sum(*s, x.view().slice(0, 32), shifted) == errc::overlapping_operands);
  const tensor_view null_view{nullptr, 4, dtype::f32, memory_space::device};
  CHECK(b.scale(*s, 2.0f, null_view) == errc::null_buffer);
  CHECK(b.axpy(*s, 1.0f, y.view(), x.view()) == errc::size_mismatch);
  CHECK(b.reduce(*s, reduction::dot, x.view(), y.view(), nullptr) == errc::null_buffer);
  double out = 0;
  CHECK(b.reduce(*s, reduction::dot, x.view(), h.view(), &out) == errc::dtype_mismatch);
  CHECK(b.copy(*s, x.view(), y.view()) == errc::size_mismatch);
  CHECK(b.convert(*s, y.view(), h.view()) == errc::size_mismatch);
  CHECK_FALSE(s->synchronize());
}

// A buffer of every memory space, filled from a plain host vector, copied to every other space
// and read back: the bytes survive each leg unchanged.
inline void copies_round_trip_between_memory_spaces(backend& b) {
  auto s = b.make_stream().value();
  const memory_space spaces[] = {memory_space::host, memory_space::pinned_host,
                                 memory_space::device};
  const host_tensor src = make_host(dtype::bf16, small_integers(100'003, 12));
  for (memory_space from : spaces) {
    for (memory_space to : spaces) {
      CAPTURE(static_cast<int>(from));
      CAPTURE(static_cast<int>(to));
      auto a = b.allocate(src.type, src.numel(), from).value();
      auto c = b.allocate(src.type, src.numel(), to).value();
      CHECK(a.space() == from);
      CHECK(c.space() == to);
      REQUIRE_FALSE(b.copy(*s, a.view(), src.view()));
      REQUIRE_FALSE(b.copy(*s, c.view(), a.view()));
      const host_tensor back = download(b, *s, c.view());
      CHECK(back.bytes == src.bytes);
    }
  }
}

// The completion callback runs after everything queued before it, so a reduction's result is
// in place when it fires; on an idle stream it fires as well.
inline void on_complete_follows_the_work(backend& b) {
  auto s = b.make_stream().value();
  const auto values = small_integers(300'007, 13);
  double want = 0;
  for (float v : values)
    want += static_cast<double>(v);
  auto x = upload(b, *s, make_host(dtype::f32, values));
  double got = -1;
  REQUIRE_FALSE(b.reduce(*s, reduction::sum, x.view(), {}, &got));
  std::promise<error_code> done;
  s->on_complete([&done](error_code ec) { done.set_value(ec); });
  CHECK_FALSE(done.get_future().get());
  CHECK(got == want);
  std::promise<error_code> idle;
  s->on_complete([&idle](error_code ec) { idle.set_value(ec); });
  CHECK_FALSE(idle.get_future().get());
}

// Sizes whose byte count does not fit in size_t are refused before any allocation is tried.
inline void overflowing_allocations_fail_with_out_of_memory(backend& b) {
  for (memory_space space : {memory_space::host, memory_space::pinned_host, memory_space::device}) {
    CAPTURE(static_cast<int>(space));
    const auto r = b.allocate(dtype::f32, SIZE_MAX / 2, space);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::out_of_memory);
  }
  auto zero = b.allocate(dtype::f16, 0, memory_space::device);
  REQUIRE(zero.has_value());
  CHECK(zero->numel() == 0);
}

// ---- sparse rows -------------------------------------------------------------------------------

struct csr {
  std::vector<std::uint32_t> offsets{0}, columns;
  std::vector<float> weights;
  std::uint32_t rows() const { return static_cast<std::uint32_t>(offsets.size() - 1); }
};

// n rows of 1..max_terms terms on distinct ascending columns, with random weights.
inline csr random_csr(std::uint32_t n, std::uint32_t max_terms, std::uint32_t seed) {
  std::mt19937 rng(seed);  // 32-bit results
  std::uniform_real_distribution<float> weight(-1.0f, 1.0f);
  csr m;
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto terms = static_cast<std::uint32_t>(1 + rng() % std::min(max_terms, n));
    std::vector<std::uint32_t> cols;
    while (cols.size() < terms) {
      const auto c = static_cast<std::uint32_t>(rng() % n);
      if (std::find(cols.begin(), cols.end(), c) == cols.end()) cols.push_back(c);
    }
    std::sort(cols.begin(), cols.end());
    for (std::uint32_t c : cols) {
      m.columns.push_back(c);
      m.weights.push_back(weight(rng));
    }
    m.offsets.push_back(static_cast<std::uint32_t>(m.columns.size()));
  }
  return m;
}

// mix_rows equals weighted_sum's rounding, term by term in column order, bit for bit: for widths
// around the CPU's 16-value chunks and the GPU's tiles (256 values, or 1024 where rows are
// 16-byte aligned), and once more on views that are not 16-byte aligned.
inline void mix_rows_rounds_like_weighted_sum(backend& b) {
  auto s = b.make_stream().value();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (std::uint32_t n : {1u, 5u, 37u}) {
    const csr m = random_csr(n, 9, n);
    auto w = b.upload_rows(m.offsets, m.columns, m.weights);
    REQUIRE(w.has_value());
    CHECK((*w)->rows() == n);
    for (std::size_t width : {1u, 7u, 16u, 33u, 128u, 257u, 1000u, 1024u, 1028u, 4100u}) {
      CAPTURE(n);
      CAPTURE(width);
      std::vector<float> x(n * width);
      for (auto& v : x)
        v = normal(rng);
      const buffer xd = upload(b, *s, make_host(dtype::f32, x));
      auto out = b.allocate(dtype::f32, x.size() + 1, memory_space::device).value();
      // shift 1: the output one value off its allocation's alignment
      for (std::size_t shift : {0u, 1u}) {
        CAPTURE(shift);
        const tensor_view o = out.view().slice(shift, x.size());
        REQUIRE_FALSE(b.mix_rows(*s, **w, width, xd.view(), o));
        const host_tensor got = download(b, *s, o);
        std::size_t wrong = 0;
        for (std::uint32_t i = 0; i < n; ++i) {
          for (std::size_t c = 0; c < width; ++c) {
            const std::uint32_t begin = m.offsets[i];
            float acc = m.weights[begin] * x[m.columns[begin] * width + c];
            for (std::uint32_t k = begin + 1; k < m.offsets[i + 1]; ++k)
              acc = std::fma(m.weights[k], x[m.columns[k] * width + c], acc);
            wrong += std::bit_cast<std::uint32_t>(acc) != got.bits(i * width + c);
          }
        }
        CHECK(wrong == 0);
      }
    }
  }
}

// Every malformed matrix and every bad mix_rows call is refused with its error.
inline void bad_sparse_rows_are_refused(backend& b) {
  const csr good = random_csr(4, 3, 1);
  auto refused = [&](csr m) {
    const auto r = b.upload_rows(m.offsets, m.columns, m.weights);
    return !r.has_value() && r.error() == errc::bad_sparse_matrix;
  };
  csr m = good;
  m.offsets = {};
  CHECK(refused(m));  // no rows at all
  m = good;
  m.offsets = {0};
  CHECK(refused(m));  // zero rows
  m = good;
  m.offsets[0] = 1;
  CHECK(refused(m));  // not from 0
  m = good;
  m.offsets.back() -= 1;
  CHECK(refused(m));  // not up to columns.size()
  m = good;
  m.weights.pop_back();
  CHECK(refused(m));  // a weight missing
  m.offsets = {0, 1, 1, 2, 3};
  m.columns = {0, 1, 2};
  m.weights = {1.0f, 1.0f, 1.0f};
  CHECK(refused(m));  // an empty row
  m.offsets = {0, 2, 3, 4, 5};
  m.columns = {2, 1, 1, 2, 3};
  m.weights.assign(5, 1.0f);
  CHECK(refused(m));  // columns descending within a row
  m.columns = {1, 1, 1, 2, 3};
  CHECK(refused(m));  // a column twice in a row
  m.columns = {0, 4, 1, 2, 3};
  CHECK(refused(m));  // a column past the last row
  m.columns = {0, 1, 1, 2, 3};
  m.weights[3] = std::nanf("");
  CHECK(refused(m));  // a weight that is not a number

  auto w = b.upload_rows(good.offsets, good.columns, good.weights).value();
  auto s = b.make_stream().value();
  auto x = b.allocate(dtype::f32, 4 * 8, memory_space::device).value();
  auto out = b.allocate(dtype::f32, 4 * 8, memory_space::device).value();
  auto half = b.allocate(dtype::bf16, 4 * 8, memory_space::device).value();
  CHECK(b.mix_rows(*s, *w, 0, x.view(), out.view()) == errc::size_mismatch);
  CHECK(b.mix_rows(*s, *w, 7, x.view(), out.view()) == errc::size_mismatch);
  CHECK(b.mix_rows(*s, *w, 8, x.view(), out.view().slice(0, 31)) == errc::size_mismatch);
  CHECK(b.mix_rows(*s, *w, 8, half.view(), half.view()) == errc::dtype_mismatch);
  CHECK(b.mix_rows(*s, *w, 8, x.view(), x.view()) == errc::overlapping_operands);
  const tensor_view null_view{nullptr, 32, dtype::f32, memory_space::device};
  CHECK(b.mix_rows(*s, *w, 8, x.view(), null_view) == errc::null_buffer);
  struct foreign final : sparse_rows {
    std::uint32_t rows() const noexcept override { return 4; }
  };
  CHECK(b.mix_rows(*s, foreign{}, 8, x.view(), out.view()) == errc::bad_sparse_matrix);
  CHECK_FALSE(s->synchronize());
}

}  // namespace mws::gpu::testing
