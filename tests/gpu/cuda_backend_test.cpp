// The CUDA backend: the conformance cases every backend passes, then CUDA against the CPU backend
// on the same random inputs (bit for bit for everything element-wise, to 1e-12 for reductions),
// buffers beyond 2^31 elements, memory spaces and allocation failure.
//
// Needs an NVIDIA GPU. Where none is usable, every test case is reported as skipped, by name,
// and the program exits with 77, which CTest counts as skipped (SKIP_RETURN_CODE).
#include "gpu/detail/cuda_entry.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <future>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "gpu/backend.hpp"
#include "tests/gpu/backend_cases.hpp"

namespace mws::gpu {
namespace {

using testing::host_tensor;

std::unique_ptr<backend> make_cuda() {
  std::string why;
  auto b = detail::make_cuda_backend(why);
  REQUIRE_MESSAGE(b != nullptr, why);
  return b;
}

// Normal values, with some exact zeros of both signs, and (for f32) some subnormals, so that
// flush-to-zero anywhere on the GPU would show.
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
    if (k == 2) f *= 0x1p-130f;  // f32 subnormal
  }
  return v;
}

host_tensor random_tensor(dtype t, std::size_t n, std::uint32_t seed) {
  return testing::make_host(t, random_values(n, seed));
}

// Bitwise equality of two host tensors; the count of differing elements.
std::size_t differing(const host_tensor& a, const host_tensor& b) {
  REQUIRE(a.numel() == b.numel());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < a.numel(); ++i)
    wrong += a.bits(i) != b.bits(i);
  return wrong;
}

tensor_view host_view(host_tensor& h) {
  return {h.bytes.data(), h.numel(), h.type, memory_space::host};
}

// ---- the conformance cases ---------------------------------------------------------------------

TEST_CASE("cuda: weighted_sum is exact for every dtype, length and input count") {
  testing::weighted_sum_is_exact(*make_cuda());
}

TEST_CASE("cuda: weighted_sum works in place on a misaligned slice") {
  testing::weighted_sum_in_place_and_misaligned(*make_cuda());
}

TEST_CASE("cuda: axpy and scale are exact") {
  testing::axpy_and_scale_are_exact(*make_cuda());
}

TEST_CASE("cuda: reductions are exact on integer inputs") {
  testing::reductions_are_exact(*make_cuda());
}

TEST_CASE("cuda: conversions between all dtypes match the scalar reference bit for bit") {
  testing::conversions_match_the_reference(*make_cuda());
}

TEST_CASE("cuda: bad calls are refused with a specific error") {
  testing::bad_calls_are_refused(*make_cuda());
}

TEST_CASE("cuda: mix_rows rounds like weighted_sum, row by row, bit for bit") {
  testing::mix_rows_rounds_like_weighted_sum(*make_cuda());
}

TEST_CASE("cuda: malformed sparse matrices and bad mix_rows calls are refused") {
  testing::bad_sparse_rows_are_refused(*make_cuda());
}

TEST_CASE("cuda: copies between every pair of memory spaces round-trip") {
  testing::copies_round_trip_between_memory_spaces(*make_cuda());
}

TEST_CASE("cuda: on_complete fires once the work, reductions included, has finished") {
  testing::on_complete_follows_the_work(*make_cuda());
}

TEST_CASE("cuda: allocations whose size overflows fail with out_of_memory") {
  testing::overflowing_allocations_fail_with_out_of_memory(*make_cuda());
}

// Kept out of backend_cases.hpp: on the CPU backend a 4 PiB request reaches malloc, which the
// sanitizer builds treat as a fatal error rather than a null return.
TEST_CASE("cuda: a 4 PiB allocation fails with out_of_memory and the backend stays usable") {
  auto gpu = make_cuda();
  for (memory_space space : {memory_space::device, memory_space::pinned_host}) {
    CAPTURE(static_cast<int>(space));
    const auto r = gpu->allocate(dtype::f32, std::size_t{1} << 50, space);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == errc::out_of_memory);
  }
  // The failure must not linger as the runtime's "last error" and fail the next launch.
  auto s = gpu->make_stream().value();
  auto x = testing::upload(*gpu, *s, testing::make_host(dtype::f32, {1.0f, -2.0f, 3.0f}));
  REQUIRE_FALSE(gpu->scale(*s, 2.0f, x.view()));
  const host_tensor got = testing::download(*gpu, *s, x.view());
  CHECK(got.at(0) == 2.0f);
  CHECK(got.at(1) == -4.0f);
  CHECK(got.at(2) == 6.0f);
}

// ---- CUDA against the CPU backend --------------------------------------------------------------

// Where the operands start, in elements from their allocation: the same offset for all lets the
// kernels use vectors after a scalar head; different offsets force the scalar path.
struct placement {
  std::size_t n;
  std::size_t out_offset;
  bool mixed;  // inputs at offsets other than the output's
};

constexpr placement placements[] = {
    {1, 0, false},   {7, 1, false},       {13, 3, true},       {64, 0, false},     {4099, 5, false},
    {4099, 2, true}, {100'003, 0, false}, {100'003, 7, false}, {100'003, 1, true},
};

constexpr std::size_t slack = 8;  // spare elements around every slice

std::size_t input_offset(const placement& p, std::size_t j) {
  return p.mixed ? (p.out_offset + j + 1) % slack : p.out_offset;
}

TEST_CASE("cuda: weighted_sum equals the CPU bit for bit for every dtype and 1 to 16 inputs") {
  auto gpu = make_cuda();
  auto cpu = make_cpu_backend();
  auto gs = gpu->make_stream().value();
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
        std::vector<host_tensor> xh;
        std::vector<buffer> xd;
        std::vector<weighted_term> gterms, cterms;
        for (std::size_t j = 0; j < k; ++j) {
          xh.push_back(random_tensor(t, total, ++seed));
          xd.push_back(testing::upload(*gpu, *gs, xh.back()));
        }
        for (std::size_t j = 0; j < k; ++j) {
          const float a = weight(rng);
          const std::size_t off = input_offset(p, j);
          gterms.push_back({xd[j].view().slice(off, p.n), a});
          cterms.push_back({xh[j].view().slice(off, p.n), a});
        }
        host_tensor out_cpu = random_tensor(t, total, ++seed);  // garbage around the slice
        buffer out_gpu = testing::upload(*gpu, *gs, out_cpu);
        REQUIRE_FALSE(gpu->weighted_sum(*gs, out_gpu.view().slice(p.out_offset, p.n), gterms));
        REQUIRE_FALSE(cpu->weighted_sum(*cs, host_view(out_cpu).slice(p.out_offset, p.n), cterms));
        const host_tensor got = testing::download(*gpu, *gs, out_gpu.view());
        CHECK(differing(got, out_cpu) == 0);
      }
    }
  }
}

// With one to three inputs each thread loads two or four chunks per round; those rounds only
// happen when a buffer spans several times the grid (~135k threads x 8 elements on an H100).
TEST_CASE("cuda: weighted_sum of 1 to 3 inputs over many grid strides equals the CPU") {
  auto gpu = make_cuda();
  auto cpu = make_cpu_backend();
  auto gs = gpu->make_stream().value();
  auto cs = cpu->make_stream().value();
  std::uint32_t seed = 300;
  for (dtype t : testing::all_dtypes) {
    for (std::size_t offset : {std::size_t{0}, std::size_t{5}}) {
      for (std::size_t k = 1; k <= 3; ++k) {
        CAPTURE(to_string(t));
        CAPTURE(offset);
        CAPTURE(k);
        const std::size_t n = 4'000'011;
        const float a[] = {0.75f, -1.25f, 0.3f};
        std::vector<host_tensor> xh;
        std::vector<buffer> xd;
        std::vector<weighted_term> gterms, cterms;
        for (std::size_t j = 0; j < k; ++j) {
          xh.push_back(random_tensor(t, n + offset, ++seed));
          xd.push_back(testing::upload(*gpu, *gs, xh.back()));
        }
        for (std::size_t j = 0; j < k; ++j) {
          gterms.push_back({xd[j].view().slice(offset, n), a[j]});
          cterms.push_back({xh[j].view().slice(offset, n), a[j]});
        }
        host_tensor out_cpu = random_tensor(t, n + offset, ++seed);
        buffer out_gpu = testing::upload(*gpu, *gs, out_cpu);
        REQUIRE_FALSE(gpu->weighted_sum(*gs, out_gpu.view().slice(offset, n), gterms));
        REQUIRE_FALSE(cpu->weighted_sum(*cs, host_view(out_cpu).slice(offset, n), cterms));
        CHECK(differing(testing::download(*gpu, *gs, out_gpu.view()), out_cpu) == 0);
      }
    }
  }
}

TEST_CASE("cuda: weighted_sum in place equals the CPU bit for bit") {
  auto gpu = make_cuda();
  auto cpu = make_cpu_backend();
  auto gs = gpu->make_stream().value();
  auto cs = cpu->make_stream().value();
  for (dtype t : testing::all_dtypes) {
    CAPTURE(to_string(t));
    const std::size_t n = 300'001;
    host_tensor xh[3] = {random_tensor(t, n, 1), random_tensor(t, n, 2), random_tensor(t, n, 3)};
    buffer xd[3] = {testing::upload(*gpu, *gs, xh[0]), testing::upload(*gpu, *gs, xh[1]),
                    testing::upload(*gpu, *gs, xh[2])};
    const weighted_term gt[] = {{xd[0].view(), 0.3f}, {xd[1].view(), -0.7f}, {xd[2].view(), 1.1f}};
    const weighted_term ct[] = {{xh[0].view(), 0.3f}, {xh[1].view(), -0.7f}, {xh[2].view(), 1.1f}};
    REQUIRE_FALSE(gpu->weighted_sum(*gs, xd[1].view(), gt));  // the output is the second input
    REQUIRE_FALSE(cpu->weighted_sum(*cs, host_view(xh[1]), ct));
    CHECK(differing(testing::download(*gpu, *gs, xd[1].view()), xh[1]) == 0);
  }
}

TEST_CASE("cuda: axpy and scale equal the CPU bit for bit, zero and one as factors included") {
  auto gpu = make_cuda();
  auto cpu = make_cpu_backend();
  auto gs = gpu->make_stream().value();
  auto cs = cpu->make_stream().value();
  std::uint32_t seed = 500;
  for (dtype t : testing::all_dtypes) {
    for (const placement& p : placements) {
      for (float a : {0.37f, -1.7f, 0.0f, 1.0f, -0.0f}) {
        CAPTURE(to_string(t));
        CAPTURE(p.n);
        CAPTURE(p.out_offset);
        CAPTURE(p.mixed);
        CAPTURE(a);
        const std::size_t total = p.n + 2 * slack;
        const host_tensor xh = random_tensor(t, total, ++seed);
        host_tensor yh = random_tensor(t, total, ++seed);
        host_tensor zh = random_tensor(t, total, ++seed);
        buffer xd = testing::upload(*gpu, *gs, xh);
        buffer yd = testing::upload(*gpu, *gs, yh);
        buffer zd = testing::upload(*gpu, *gs, zh);
        const std::size_t xoff = input_offset(p, 0);
        REQUIRE_FALSE(
            gpu->axpy(*gs, a, xd.view().slice(xoff, p.n), yd.view().slice(p.out_offset, p.n)));
        REQUIRE_FALSE(
            cpu->axpy(*cs, a, xh.view().slice(xoff, p.n), host_view(yh).slice(p.out_offset, p.n)));
        REQUIRE_FALSE(gpu->scale(*gs, a, zd.view().slice(p.out_offset, p.n)));
        REQUIRE_FALSE(cpu->scale(*cs, a, host_view(zh).slice(p.out_offset, p.n)));
        CHECK(differing(testing::download(*gpu, *gs, yd.view()), yh) == 0);
        CHECK(differing(testing::download(*gpu, *gs, zd.view()), zh) == 0);
      }
    }
  }
}

// Every 16-bit pattern (NaNs, infinities, subnormals included) and arbitrary f32 patterns, at
// aligned and misaligned offsets, against gpu/dtype.hpp's scalar functions.
TEST_CASE("cuda: conversions of every bit pattern equal the scalar reference") {
  testing::every_bit_pattern_converts_like_the_reference(*make_cuda());
}

double relative_error(double got, double want) {
  if (got == want) return 0.0;
  return std::abs(got - want) / std::max(std::abs(want), std::numeric_limits<double>::min());
}

TEST_CASE("cuda: reductions agree with the CPU, repeat bit for bit and ignore alignment") {
  auto gpu = make_cuda();
  auto cpu = make_cpu_backend();
  auto gs = gpu->make_stream().value();
  auto cs = cpu->make_stream().value();
  std::uint32_t seed = 900;
  for (dtype t : testing::all_dtypes) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{9},
                          std::size_t{4099}, std::size_t{1'000'003}, std::size_t{3'000'017}}) {
      for (reduction op : {reduction::sum, reduction::dot, reduction::squared_distance}) {
        CAPTURE(to_string(t));
        CAPTURE(n);
        CAPTURE(static_cast<int>(op));
        // The same data twice: at the start of an allocation and one element further on.
        host_tensor xh = random_tensor(t, n + 1, ++seed);
        host_tensor yh = random_tensor(t, n + 1, ++seed);
        buffer xd = testing::upload(*gpu, *gs, xh);
        buffer yd = testing::upload(*gpu, *gs, yh);
        auto xd2 = gpu->allocate(t, n + 1, memory_space::device).value();
        auto yd2 = gpu->allocate(t, n + 1, memory_space::device).value();
        REQUIRE_FALSE(gpu->copy(*gs, xd2.view().slice(1, n), xd.view().slice(0, n)));
        REQUIRE_FALSE(gpu->copy(*gs, yd2.view().slice(1, n), yd.view().slice(0, n)));
        double want = -1.0, first = -2.0, second = -3.0, shifted = -4.0;
        REQUIRE_FALSE(cpu->reduce(*cs, op, xh.view().slice(0, n), yh.view().slice(0, n), &want));
        REQUIRE_FALSE(gpu->reduce(*gs, op, xd.view().slice(0, n), yd.view().slice(0, n), &first));
        REQUIRE_FALSE(gpu->reduce(*gs, op, xd.view().slice(0, n), yd.view().slice(0, n), &second));
        REQUIRE_FALSE(
            gpu->reduce(*gs, op, xd2.view().slice(1, n), yd2.view().slice(1, n), &shifted));
        REQUIRE_FALSE(gs->synchronize());
        CHECK(relative_error(first, want) <= 1e-12);
        CHECK(std::bit_cast<std::uint64_t>(first) == std::bit_cast<std::uint64_t>(second));
        CHECK(std::bit_cast<std::uint64_t>(first) == std::bit_cast<std::uint64_t>(shifted));
      }
    }
  }
}

TEST_CASE("cuda: host and pinned memory are refused by every computing operation") {
  auto gpu = make_cuda();
  auto s = gpu->make_stream().value();
  auto dev = gpu->allocate(dtype::f32, 64, memory_space::device).value();
  for (memory_space space : {memory_space::host, memory_space::pinned_host}) {
    CAPTURE(static_cast<int>(space));
    auto other = gpu->allocate(dtype::f32, 64, space).value();
    CHECK(other.space() == space);
    const weighted_term host_input[] = {{dev.view(), 1.0f}, {other.view(), 1.0f}};
    CHECK(gpu->weighted_sum(*s, dev.view(), host_input) == errc::wrong_memory_space);
    const weighted_term dev_input[] = {{dev.view(), 1.0f}};
    CHECK(gpu->weighted_sum(*s, other.view(), dev_input) == errc::wrong_memory_space);
    CHECK(gpu->axpy(*s, 1.0f, other.view(), dev.view()) == errc::wrong_memory_space);
    CHECK(gpu->axpy(*s, 1.0f, dev.view(), other.view()) == errc::wrong_memory_space);
    CHECK(gpu->scale(*s, 2.0f, other.view()) == errc::wrong_memory_space);
    CHECK(gpu->convert(*s, other.view(), dev.view()) == errc::wrong_memory_space);
    CHECK(gpu->convert(*s, dev.view(), other.view()) == errc::wrong_memory_space);
    double out = 0;
    CHECK(gpu->reduce(*s, reduction::sum, other.view(), {}, &out) == errc::wrong_memory_space);
    CHECK(gpu->reduce(*s, reduction::dot, dev.view(), other.view(), &out) ==
          errc::wrong_memory_space);
    CHECK_FALSE(gpu->copy(*s, other.view(), dev.view()));  // copies take any space
  }
  CHECK_FALSE(s->synchronize());
}

// ---- beyond 2^31 elements ----------------------------------------------------------------------

constexpr std::size_t big_n = (std::size_t{1} << 31) + 77;
constexpr std::size_t period = std::size_t{1} << 24;  // big_n = 128 periods + 77

float pattern_x(std::size_t i) {
  return static_cast<float>(static_cast<int>((i % period) * 7 % 17) - 8);
}

float pattern_y(std::size_t i) {
  return static_cast<float>(static_cast<int>((i % period) * 5 % 13) - 6);
}

// A device buffer of big_n elements holding pattern(i), filled from one pinned period.
buffer fill_big(backend& b, stream& s, dtype t, float (*pattern)(std::size_t)) {
  auto staging = b.allocate(t, period, memory_space::pinned_host).value();
  auto* bytes = static_cast<unsigned char*>(staging.data());
  for (std::size_t i = 0; i < period; ++i)
    testing::store_as(t, bytes + i * dtype_size(t), pattern(i));
  auto d = b.allocate(t, big_n, memory_space::device).value();
  for (std::size_t first = 0; first < big_n; first += period) {
    const std::size_t count = std::min(period, big_n - first);
    REQUIRE_FALSE(b.copy(s, d.view().slice(first, count), staging.view().slice(0, count)));
  }
  REQUIRE_FALSE(s.synchronize());  // before the staging buffer goes
  return d;
}

// Element indices to check: both ends, across 2^31, and spread over the buffer.
std::vector<std::size_t> probe_starts() {
  // Every window of 4096 elements must lie inside the big_n-element buffer: the last one
  // starts at big_n - 4096 and so covers elements 2^31 - 1 and 2^31.
  std::vector<std::size_t> starts = {0, (std::size_t{1} << 31) - 4096, big_n - 4096,
                                     big_n - 4096 - 33};
  std::mt19937_64 rng(3);
  for (int i = 0; i < 32; ++i)
    starts.push_back(rng() % (big_n - 4096));
  return starts;
}

TEST_CASE("cuda: bf16 weighted_sum and reductions cover more than 2^31 elements exactly") {
  auto gpu = make_cuda();
  auto s = gpu->make_stream().value();
  buffer x = fill_big(*gpu, *s, dtype::bf16, pattern_x);
  buffer y = fill_big(*gpu, *s, dtype::bf16, pattern_y);
  auto out = gpu->allocate(dtype::bf16, big_n, memory_space::device).value();
  const weighted_term terms[] = {{x.view(), 0.5f}, {y.view(), 0.25f}};
  REQUIRE_FALSE(gpu->weighted_sum(*s, out.view(), terms));
  double sum = 0, dot = 0;
  REQUIRE_FALSE(gpu->reduce(*s, reduction::sum, out.view(), {}, &sum));
  REQUIRE_FALSE(gpu->reduce(*s, reduction::dot, x.view(), y.view(), &dot));
  REQUIRE_FALSE(s->synchronize());
  // Every value is a multiple of 1/4 below 2^40 in magnitude: any order of f64 adds is exact.
  double want_sum = 0, want_dot = 0;
  for (std::size_t i = 0; i < period; ++i) {
    const double full = i < big_n % period ? 129.0 : 128.0;  // periods that contain index i
    want_sum +=
        full * (0.5 * static_cast<double>(pattern_x(i)) + 0.25 * static_cast<double>(pattern_y(i)));
    want_dot += full * (static_cast<double>(pattern_x(i)) * static_cast<double>(pattern_y(i)));
  }
  CHECK(sum == want_sum);
  CHECK(dot == want_dot);
  std::size_t wrong = 0;
  for (std::size_t first : probe_starts()) {
    CAPTURE(first);
    const host_tensor got = testing::download(*gpu, *s, out.view().slice(first, 4096));
    for (std::size_t i = 0; i < 4096; ++i)
      wrong += got.at(i) != 0.5f * pattern_x(first + i) + 0.25f * pattern_y(first + i);
  }
  CHECK(wrong == 0);
}

TEST_CASE("cuda: f32 scale and sum cover more than 2^31 elements exactly") {
  auto gpu = make_cuda();
  auto s = gpu->make_stream().value();
  buffer x = fill_big(*gpu, *s, dtype::f32, pattern_x);
  REQUIRE_FALSE(gpu->scale(*s, -2.0f, x.view().slice(1, big_n - 1)));  // element 0 untouched
  double sum = 0;
  REQUIRE_FALSE(gpu->reduce(*s, reduction::sum, x.view(), {}, &sum));
  REQUIRE_FALSE(s->synchronize());
  double want = 0;
  for (std::size_t i = 0; i < period; ++i) {
    const double full = i < big_n % period ? 129.0 : 128.0;
    want += full * -2.0 * static_cast<double>(pattern_x(i));
  }
  want += 3.0 * static_cast<double>(pattern_x(0));  // element 0 kept its value: +x instead of -2x
  CHECK(sum == want);
  std::size_t wrong = 0;
  for (std::size_t first : probe_starts()) {
    CAPTURE(first);
    const host_tensor got = testing::download(*gpu, *s, x.view().slice(first, 4096));
    for (std::size_t i = 0; i < 4096; ++i) {
      const std::size_t at = first + i;
      wrong += got.at(i) != (at == 0 ? 1.0f : -2.0f) * pattern_x(at);
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("make_backend: automatic picks CUDA where a device is usable") {
  auto chosen = make_backend(backend_choice::automatic);
  REQUIRE(chosen.chosen);
  CHECK(chosen.chosen->name() == "cuda");
  MESSAGE(chosen.reason);
}

// Prints the name of every test case that passes the command line's filters, one per line.
class name_lister final : public doctest::IReporter {
 public:
  explicit name_lister(const doctest::ContextOptions& options) : out_(*options.cout) {}
  void report_query(const doctest::QueryData& query) override {
    for (unsigned i = 0; i < query.num_data; ++i)
      out_ << query.data[i]->m_name << '\n';
  }
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}

 private:
  std::ostream& out_;
};

REGISTER_REPORTER("mws_names", 1, name_lister);

}  // namespace
}  // namespace mws::gpu

int main(int argc, char** argv) {
  std::string why;
  if (mws::gpu::detail::make_cuda_backend(why) != nullptr)
    return doctest::Context(argc, argv).run();
  std::vector<const char*> args(argv, argv + argc);
  args.push_back("--list-test-cases");
  args.push_back("--reporters=mws_names");
  std::ostringstream names;
  doctest::Context listing(static_cast<int>(args.size()), args.data());
  listing.setCout(&names);
  listing.run();
  std::istringstream lines(names.str());
  for (std::string name; std::getline(lines, name);) {
    if (!name.empty())
      std::cout << "SKIPPED (no usable CUDA device: " << why << "): " << name << '\n';
  }
  return 77;  // CTest's SKIP_RETURN_CODE for this test
}
