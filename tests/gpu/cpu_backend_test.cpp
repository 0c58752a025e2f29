#include "gpu/backend.hpp"

#include <bit>
#include <cmath>
#include <random>

#include <doctest/doctest.h>

#include "gpu/detail/cpu_kernels.hpp"
#include "tests/gpu/backend_cases.hpp"

namespace mws::gpu {
namespace {

TEST_CASE("scalar conversions round to nearest even and keep special values") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);  // tie, rounds to even
  CHECK(f32_to_bf16(1.0f + 0x3p-8f) == 0x3f82);  // tie, rounds up to even
  CHECK(f32_to_bf16(-INFINITY) == 0xff80);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);    // rounds to infinity
  CHECK(f32_to_f16(0x1p-24f) == 0x0001);    // least subnormal
  CHECK(f32_to_f16(0x1p-25f) == 0x0000);    // tie, rounds to even (zero)
  CHECK(f32_to_f16(0x1.8p-24f) == 0x0002);  // tie, rounds up to even
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);  // tie at the normal precision
  CHECK(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<std::uint16_t>(h));
    if (!std::isnan(f)) REQUIRE(f32_to_f16(f) == h);  // every f16 survives a round trip
  }
}

TEST_CASE("element loads and stores convert through f32 and need no alignment") {
  // A bf16 element then an f32 one, packed back to back as in a safetensors file.
  unsigned char bytes[1 + 2 + 4] = {};
  store_from_f32(bytes + 1, dtype::bf16, 0, 1.5f);
  store_from_f32(bytes + 3, dtype::f32, 0, -2.25f);
  CHECK(load_as_f32(bytes + 1, dtype::bf16, 0) == 1.5f);
  CHECK(load_as_f32(bytes + 3, dtype::f32, 0) == -2.25f);
  std::uint16_t halves[2] = {};
  store_from_f32(halves, dtype::f16, 1, 65504.0f);
  CHECK(halves[1] == 0x7bff);
  CHECK(load_as_f32(halves, dtype::f16, 1) == 65504.0f);
  store_from_f32(halves, dtype::bf16, 0, 1.0f + 0x1p-8f);  // a tie: rounds to even
  CHECK(load_as_f32(halves, dtype::bf16, 0) == 1.0f);
}

TEST_CASE("parse_dtype accepts mws and safetensors names and refuses others") {
  CHECK(parse_dtype("f32") == dtype::f32);
  CHECK(parse_dtype("BF16") == dtype::bf16);
  CHECK(parse_dtype("F16") == dtype::f16);
  CHECK_FALSE(parse_dtype("F64").has_value());
  CHECK_FALSE(parse_dtype("").has_value());
}

TEST_CASE("cpu: weighted_sum is exact for every dtype, length and input count") {
  testing::weighted_sum_is_exact(*make_cpu_backend());
}

TEST_CASE("cpu: weighted_sum works in place on a misaligned slice") {
  testing::weighted_sum_in_place_and_misaligned(*make_cpu_backend());
}

TEST_CASE("cpu: axpy and scale are exact") {
  testing::axpy_and_scale_are_exact(*make_cpu_backend());
}

TEST_CASE("cpu: reductions are exact on integer inputs") {
  testing::reductions_are_exact(*make_cpu_backend());
}

TEST_CASE("cpu: conversions between all dtypes match the scalar reference bit for bit") {
  testing::conversions_match_the_reference(*make_cpu_backend());
}

TEST_CASE("cpu: conversions of every bit pattern equal the scalar reference") {
  testing::every_bit_pattern_converts_like_the_reference(*make_cpu_backend());
}

TEST_CASE("cpu: bad calls are refused with a specific error") {
  testing::bad_calls_are_refused(*make_cpu_backend());
}

TEST_CASE("cpu: mix_rows rounds like weighted_sum, row by row, bit for bit") {
  testing::mix_rows_rounds_like_weighted_sum(*make_cpu_backend());
}

TEST_CASE("cpu: malformed sparse matrices and bad mix_rows calls are refused") {
  testing::bad_sparse_rows_are_refused(*make_cpu_backend());
}

TEST_CASE("cpu: copies between every pair of memory spaces round-trip") {
  testing::copies_round_trip_between_memory_spaces(*make_cpu_backend());
}

TEST_CASE("cpu: on_complete fires once the work, reductions included, has finished") {
  testing::on_complete_follows_the_work(*make_cpu_backend());
}

TEST_CASE("cpu: allocations whose size overflows fail with out_of_memory") {
  testing::overflowing_allocations_fail_with_out_of_memory(*make_cpu_backend());
}

TEST_CASE("make_backend: cpu on request; automatic always yields a backend with a reason") {
  auto cpu = make_backend(backend_choice::cpu);
  REQUIRE(cpu.chosen);
  CHECK(cpu.chosen->name() == "cpu");
  auto any = make_backend(backend_choice::automatic);
  REQUIRE(any.chosen);
  CHECK_FALSE(any.reason.empty());
  auto cuda = make_backend(backend_choice::cuda);
  CHECK(static_cast<bool>(cuda.chosen) == (cuda.chosen && cuda.chosen->name() == "cuda"));
  CHECK_FALSE(cuda.reason.empty());
}

#if defined(MWS_HAVE_X86_64_V3)
// The two instruction-set builds of the kernels must agree bit for bit on arbitrary data,
// including the reductions (same lanes, same combining order).
TEST_CASE("cpu kernels: the x86-64-v3 build equals the portable build bit for bit") {
  std::string why;
  const auto& chosen = detail::select_cpu_kernels(why);
  if (&chosen != &detail::cpu_kernels_x86_64_v3()) {
    MESSAGE("skipped: this CPU cannot run the x86-64-v3 kernels (" << why << ")");
    return;
  }
  const auto& base = detail::cpu_kernels_baseline();
  const auto& v3 = detail::cpu_kernels_x86_64_v3();
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (dtype t : testing::all_dtypes) {
    for (std::size_t n : {std::size_t{13}, std::size_t{4096 + 5}, std::size_t{400'009}}) {
      CAPTURE(to_string(t));
      CAPTURE(n);
      std::vector<testing::host_tensor> x;
      std::vector<const void*> ptrs;
      for (int j = 0; j < 5; ++j) {
        std::vector<float> v(n);
        for (auto& f : v)
          f = normal(rng);
        x.push_back(testing::make_host(t, v));
      }
      for (auto& h : x)
        ptrs.push_back(h.bytes.data());
      const float a[] = {0.3f, -1.7f, 0.011f, 2.5f, 0.2f};
      std::vector<unsigned char> out1(x[0].bytes.size()), out2(x[0].bytes.size());
      base.weighted_sum(t, out1.data(), ptrs.data(), a, 5, n);
      v3.weighted_sum(t, out2.data(), ptrs.data(), a, 5, n);
      CHECK(out1 == out2);
      base.axpy(t, 0.37f, ptrs[1], out1.data(), n);
      v3.axpy(t, 0.37f, ptrs[1], out2.data(), n);
      CHECK(out1 == out2);
      base.scale(t, 1.3f, out1.data(), n);
      v3.scale(t, 1.3f, out2.data(), n);
      CHECK(out1 == out2);
      for (auto op : {reduction::sum, reduction::dot, reduction::squared_distance}) {
        const double r1 = base.reduce(op, t, ptrs[2], ptrs[3], n);
        const double r2 = v3.reduce(op, t, ptrs[2], ptrs[3], n);
        CHECK(std::bit_cast<std::uint64_t>(r1) == std::bit_cast<std::uint64_t>(r2));
      }
    }
  }
}
#endif

}  // namespace
}  // namespace mws::gpu
