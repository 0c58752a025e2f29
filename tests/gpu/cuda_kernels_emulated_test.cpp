// The CUDA backend's kernels, compiled as C++ and run on the CPU through a stand-in for the CUDA
// runtime (cuda_emulation/cuda_runtime.h), against the CPU backend and gpu/dtype.hpp. Needs no
// GPU, so the kernels' index arithmetic, heads, tails, alignment choices, packing, conversions
// and reduction order are checked on every machine and under the sanitizers. What only a GPU
// can show (its arithmetic units, memory model, launch errors, speed) is mws_gpu_cuda_test's.
#include "gpu/cuda/kernels.cuh"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "gpu/backend.hpp"
#include "gpu/cuda/kernels.cu"  // NOLINT: the kernels themselves, built for the emulation
#include "tests/gpu/backend_cases.hpp"

namespace mws::gpu {
namespace {

using testing::host_tensor;

// A one-multiprocessor "device" and a three-block reduction grid: small grids, so that every
// grid-stride loop goes round several times.
constexpr int sms = 1;
constexpr int grid_max = 3;

std::vector<float> random_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.5f, 3.0f);
  std::uniform_int_distribution<int> kind(0, 31);
  std::vector<float> v(n);
  for (auto& f : v) {
    const int k = kind(rng);
    f = normal(rng);
    if (k == 0) f = 0.0f;
    if (k == 1) f = -0.0f;
    if (k == 2) f *= 0x1p-130f;
  }
  return v;
}

std::size_t differing(const host_tensor& a, const host_tensor& b) {
  REQUIRE(a.numel() == b.numel());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < a.numel(); ++i)
    wrong += a.bits(i) != b.bits(i);
  return wrong;
}

unsigned char* at(host_tensor& h, std::size_t i) {
  return h.bytes.data() + i * dtype_size(h.type);
}

const unsigned char* at(const host_tensor& h, std::size_t i) {
  return h.bytes.data() + i * dtype_size(h.type);
}

struct placement {
  std::size_t n;
  std::size_t out_offset;
  bool mixed;
};

constexpr placement placements[] = {
    {0, 0, false},      {1, 0, false},      {7, 1, false},     {8, 0, false},
    {13, 3, true},      {64, 0, false},     {4099, 5, false},  {4099, 2, true},
    {20'011, 0, false}, {20'011, 7, false}, {20'011, 6, true},
};

constexpr std::size_t slack = 8;

std::size_t input_offset(const placement& p, std::size_t j) {
  return p.mixed ? (p.out_offset + j + 1) % slack : p.out_offset;
}

TEST_CASE("emulated cuda kernels: weighted_sum equals the CPU backend bit for bit") {
  auto cpu = make_cpu_backend();
  auto cs = cpu->make_stream().value();
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> weight(-1.5f, 1.5f);
  std::uint32_t seed = 100;
  for (dtype t : testing::all_dtypes) {
    for (const placement& p : placements) {
      for (std::size_t k = 1; k <= backend::max_terms; ++k) {
        CAPTURE(to_string(t));
        CAPTURE(p.n);
        CAPTURE(p.out_offset);
        CAPTURE(p.mixed);
        CAPTURE(k);
        const std::size_t total = p.n + 2 * slack;
        std::vector<host_tensor> x;
        std::vector<const void*> ptrs;
        std::vector<float> a;
        std::vector<weighted_term> terms;
        for (std::size_t j = 0; j < k; ++j)
          x.push_back(testing::make_host(t, random_values(total, ++seed)));
        for (std::size_t j = 0; j < k; ++j) {
          const std::size_t off = input_offset(p, j);
          a.push_back(weight(rng));
          ptrs.push_back(at(x[j], off));
          terms.push_back({x[j].view().slice(off, p.n), a.back()});
        }
        host_tensor want = testing::make_host(t, random_values(total, ++seed));
        host_tensor got = want;
        REQUIRE(cuda::launch_weighted_sum(nullptr, sms, t, at(got, p.out_offset), ptrs.data(),
                                          a.data(), static_cast<int>(k), p.n) == cudaSuccess);
        const tensor_view out{at(want, p.out_offset), p.n, t, memory_space::host};
        REQUIRE_FALSE(cpu->weighted_sum(*cs, out, terms));
        CHECK(differing(got, want) == 0);
      }
    }
  }
}

// With one to three inputs each thread loads two or four chunks per round; those rounds only
// happen when the buffer spans several times the grid (here 1024 threads x 8 elements).
TEST_CASE("emulated cuda kernels: weighted_sum of 1 to 3 inputs over many grid strides") {
  auto cpu = make_cpu_backend();
  auto cs = cpu->make_stream().value();
  std::uint32_t seed = 300;
  for (dtype t : testing::all_dtypes) {
    for (std::size_t offset : {std::size_t{0}, std::size_t{5}}) {
      for (std::size_t k = 1; k <= 3; ++k) {
        CAPTURE(to_string(t));
        CAPTURE(offset);
        CAPTURE(k);
        const std::size_t n = 100'003;
        std::vector<host_tensor> x;
        std::vector<const void*> ptrs;
        std::vector<weighted_term> terms;
        const float a[] = {0.75f, -1.25f, 0.3f};
        for (std::size_t j = 0; j < k; ++j)
          x.push_back(testing::make_host(t, random_values(n + offset, ++seed)));
        for (std::size_t j = 0; j < k; ++j) {
          ptrs.push_back(at(x[j], offset));
          terms.push_back({x[j].view().slice(offset, n), a[j]});
        }
        host_tensor want = testing::make_host(t, random_values(n + offset, ++seed));
        host_tensor got = want;
        REQUIRE(cuda::launch_weighted_sum(nullptr, sms, t, at(got, offset), ptrs.data(), a,
                                          static_cast<int>(k), n) == cudaSuccess);
        const tensor_view out{at(want, offset), n, t, memory_space::host};
        REQUIRE_FALSE(cpu->weighted_sum(*cs, out, terms));
        CHECK(differing(got, want) == 0);
      }
    }
  }
}

TEST_CASE("emulated cuda kernels: weighted_sum in place equals the CPU backend bit for bit") {
  auto cpu = make_cpu_backend();
  auto cs = cpu->make_stream().value();
  for (dtype t : testing::all_dtypes) {
    CAPTURE(to_string(t));
    const std::size_t n = 10'007;
    host_tensor x = testing::make_host(t, random_values(n + 1, 1));
    host_tensor y = testing::make_host(t, random_values(n + 1, 2));
    host_tensor x_cpu = x;
    const void* ptrs[] = {at(x, 1), at(y, 1)};
    const float a[] = {0.3f, -0.7f};
    REQUIRE(cuda::launch_weighted_sum(nullptr, sms, t, at(x, 1), ptrs, a, 2, n) == cudaSuccess);
    const weighted_term terms[] = {{x_cpu.view().slice(1, n), 0.3f}, {y.view().slice(1, n), -0.7f}};
    const tensor_view out{at(x_cpu, 1), n, t, memory_space::host};
    REQUIRE_FALSE(cpu->weighted_sum(*cs, out, terms));
    CHECK(differing(x, x_cpu) == 0);
  }
}

TEST_CASE("emulated cuda kernels: conversions of every bit pattern equal the scalar reference") {
  const std::vector<float> f32_patterns = testing::conversion_patterns(std::size_t{1} << 16);
  for (dtype from : testing::all_dtypes) {
    for (dtype to : testing::all_dtypes) {
      if (from == to) continue;  // the backend copies instead
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
          host_tensor dst{to, std::vector<unsigned char>((n + dst_off) * dtype_size(to))};
          REQUIRE(cuda::launch_convert(nullptr, sms, to, at(dst, dst_off), from, at(src, src_off),
                                       n) == cudaSuccess);
          std::size_t wrong = 0;
          for (std::size_t i = 0; i < n; ++i) {
            const float f = src.at(src_off + i);
            const std::uint32_t want = to == dtype::f32   ? std::bit_cast<std::uint32_t>(f)
                                       : to == dtype::f16 ? f32_to_f16(f)
                                                          : f32_to_bf16(f);
            wrong += dst.bits(dst_off + i) != want;
          }
          CHECK(wrong == 0);
        }
      }
    }
  }
}

TEST_CASE("emulated cuda kernels: reductions agree with the CPU and do not depend on alignment") {
  auto cpu = make_cpu_backend();
  auto cs = cpu->make_stream().value();
  std::vector<double> partials(grid_max);
  std::uint32_t seed = 900;
  for (dtype t : testing::all_dtypes) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{9},
                          std::size_t{4099}, std::size_t{50'003}}) {
      for (reduction op : {reduction::sum, reduction::dot, reduction::squared_distance}) {
        CAPTURE(to_string(t));
        CAPTURE(n);
        CAPTURE(static_cast<int>(op));
        const host_tensor x = testing::make_host(t, random_values(n + 1, ++seed));
        const host_tensor y = testing::make_host(t, random_values(n + 1, ++seed));
        // The same values again, one element further on.
        host_tensor x2{t, std::vector<unsigned char>((n + 1) * dtype_size(t))};
        host_tensor y2 = x2;
        std::memcpy(at(x2, 1), at(x, 0), n * dtype_size(t));
        std::memcpy(at(y2, 1), at(y, 0), n * dtype_size(t));
        const auto kop = op == reduction::dot                ? cuda::reduce_op::dot
                         : op == reduction::squared_distance ? cuda::reduce_op::squared_distance
                                                             : cuda::reduce_op::sum;
        double got = -1.0, shifted = -2.0, want = -3.0;
        REQUIRE(cuda::launch_reduce(nullptr, grid_max, kop, t, at(x, 0), at(y, 0), n,
                                    partials.data(), &got) == cudaSuccess);
        REQUIRE(cuda::launch_reduce(nullptr, grid_max, kop, t, at(x2, 1), at(y2, 1), n,
                                    partials.data(), &shifted) == cudaSuccess);
        REQUIRE_FALSE(cpu->reduce(*cs, op, x.view().slice(0, n), y.view().slice(0, n), &want));
        const double err = got == want ? 0.0 : std::abs(got - want) / std::abs(want);
        CHECK(err <= 1e-12);
        CHECK(std::bit_cast<std::uint64_t>(got) == std::bit_cast<std::uint64_t>(shifted));
      }
    }
  }
}

TEST_CASE("emulated cuda kernels: reductions of small integers are exact") {
  std::vector<double> partials(grid_max);
  for (dtype t : testing::all_dtypes) {
    const std::size_t n = 30'001;
    const auto xv = testing::small_integers(n, 5);
    const auto yv = testing::small_integers(n, 6);
    double sum = 0, dot = 0, dist = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double xi = static_cast<double>(xv[i]), yi = static_cast<double>(yv[i]);
      sum += xi;
      dot += xi * yi;
      dist += (xi - yi) * (xi - yi);
    }
    const host_tensor x = testing::make_host(t, xv);
    const host_tensor y = testing::make_host(t, yv);
    double got = 0;
    REQUIRE(cuda::launch_reduce(nullptr, grid_max, cuda::reduce_op::sum, t, at(x, 0), nullptr, n,
                                partials.data(), &got) == cudaSuccess);
    CHECK(got == sum);
    REQUIRE(cuda::launch_reduce(nullptr, grid_max, cuda::reduce_op::dot, t, at(x, 0), at(y, 0), n,
                                partials.data(), &got) == cudaSuccess);
    CHECK(got == dot);
    REQUIRE(cuda::launch_reduce(nullptr, grid_max, cuda::reduce_op::squared_distance, t, at(x, 0),
                                at(y, 0), n, partials.data(), &got) == cudaSuccess);
    CHECK(got == dist);
  }
}

TEST_CASE("emulated cuda kernels: mix_rows equals the CPU backend bit for bit") {
  auto cpu = make_cpu_backend();
  auto s = cpu->make_stream().value();
  for (std::uint32_t n : {1u, 6u, 13u}) {
    const testing::csr m = testing::random_csr(n, 5, 40 + n);
    auto w = cpu->upload_rows(m.offsets, m.columns, m.weights).value();
    // Widths across the tiles (256 values, or 1024 where rows are 16-byte aligned): a grid of 4
    // blocks strides over many (tile, row) pairs.
    for (std::size_t width : {1u, 255u, 256u, 257u, 600u, 2052u}) {
      CAPTURE(n);
      CAPTURE(width);
      const std::vector<float> x = random_values(n * width, static_cast<std::uint32_t>(width));
      std::vector<float> expected(x.size()), got(x.size());
      const const_tensor_view xv(x.data(), x.size(), dtype::f32, memory_space::host);
      REQUIRE_FALSE(cpu->mix_rows(*s, *w, width, xv,
                                  {expected.data(), x.size(), dtype::f32, memory_space::host}));
      REQUIRE(cuda::launch_mix_rows(nullptr, sms, m.offsets.data(), m.columns.data(),
                                    m.weights.data(), n, width, x.data(),
                                    got.data()) == cudaSuccess);
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < x.size(); ++i)
        wrong += std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(expected[i]);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("emulated cuda kernels: launchers refuse impossible arguments") {
  const float a[] = {1.0f};
  const void* x[] = {nullptr};
  CHECK(cuda::launch_weighted_sum(nullptr, sms, dtype::f32, nullptr, x, a, 0, 1) ==
        cudaErrorInvalidValue);
  CHECK(cuda::launch_weighted_sum(nullptr, sms, dtype::f32, nullptr, x, a, 17, 1) ==
        cudaErrorInvalidValue);
  CHECK(cuda::launch_convert(nullptr, sms, dtype::f16, nullptr, dtype::f16, nullptr, 4) ==
        cudaErrorInvalidValue);
  CHECK(cuda::launch_reduce(nullptr, 0, cuda::reduce_op::sum, dtype::f32, nullptr, nullptr, 0,
                            nullptr, nullptr) == cudaErrorInvalidValue);
}

}  // namespace
}  // namespace mws::gpu
