// Shared helpers for the C++ tests: GPU detection (skip with a reason), RAII device buffers,
// seeded random inputs, NaN-poisoned outputs, and the tolerance rule.
#pragma once
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "flashkernel/device_info.h"
#include "flashkernel/status.h"

namespace flashkernel::testing {

inline bool has_gpu() { return device_count() > 0; }

#define FK_SKIP_WITHOUT_GPU() \
  if (!::flashkernel::testing::has_gpu()) GTEST_SKIP() << "no CUDA device visible: GPU test skipped"

// Owns n elements of T on the device.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::int64_t n) : n_(n) {
    if (n_ > 0) FK_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes()));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(static_cast<std::int64_t>(host.size())) {
    upload(host);
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  std::int64_t size() const { return n_; }
  std::size_t bytes() const { return static_cast<std::size_t>(n_) * sizeof(T); }
  void upload(const std::vector<T>& host) {
    if (n_ > 0) FK_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(static_cast<std::size_t>(n_));
    if (n_ > 0) FK_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // All-ones bytes are NaN in fp32, fp16 and bf16: any element a kernel forgets to write fails.
  void poison() {
    if (n_ > 0) FK_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes()));
  }

 private:
  T* ptr_ = nullptr;
  std::int64_t n_ = 0;
};

// Fresh random values in [lo, hi), rounded to T; the seed is printed by failing tests.
template <typename T>
std::vector<T> random_vector(std::int64_t n, std::uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = from_float<T>(dist(rng));
  return v;
}

// The element types typed tests run over: every dtype, or the 16-bit ones (tensor-core ops).
using AllDtypes = ::testing::Types<float, __half, __nv_bfloat16>;
using HalfDtypes = ::testing::Types<__half, __nv_bfloat16>;

// Declares the typed test fixture `Suite` over a list of element types, e.g.
//   FK_DTYPE_TEST_SUITE(ReduceTest, testing::AllDtypes);
//   TYPED_TEST(ReduceTest, Sum) { ... TypeParam ... }
#define FK_DTYPE_TEST_SUITE(Suite, Dtypes) \
  template <typename T>                    \
  class Suite : public ::testing::Test {}; \
  TYPED_TEST_SUITE(Suite, Dtypes)

// Rows of random token ids in [0, vocab), one row per length (prompts for the GPT-2 tests).
inline std::vector<std::vector<std::int32_t>> random_token_rows(const std::vector<int>& lengths, std::int64_t vocab,
                                                                std::uint64_t seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::vector<std::vector<std::int32_t>> rows;
  for (int len : lengths) {
    std::vector<std::int32_t> row(len);
    for (auto& t : row) t = static_cast<std::int32_t>(rng() % vocab);
    rows.push_back(row);
  }
  return rows;
}

// Sets (or, with nullptr, unsets) an environment variable for the scope: the switches the
// library reads when an object is built.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = std::string(old);
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_.c_str(), old_->c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// A seed that differs between runs (fresh inputs every time) but is reported on failure.
inline std::uint64_t fresh_seed() { return std::random_device{}(); }

// Relative tolerance of one rounding to T (half an ulp at 1.0, doubled for safety).
template <typename T>
constexpr double rounding_tolerance() {
  if constexpr (std::is_same_v<T, float>) return 1e-6;
  if constexpr (std::is_same_v<T, __half>) return 1e-3;
  return 8e-3;
}

// Every element within atol + rtol*|ref|; NaN anywhere fails. Returns the first bad index or -1.
template <typename T>
std::int64_t first_mismatch(const std::vector<T>& got, const std::vector<T>& want, double rtol, double atol) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    double g = to_float(got[i]), w = to_float(want[i]);
    if (std::isnan(g) || std::isnan(w) || std::abs(g - w) > atol + rtol * std::abs(w)) return std::int64_t(i);
  }
  return -1;
}

// fn() must throw ArgumentError naming `argument` (and nothing else may escape).
template <typename Fn>
void expect_argument_error(Fn&& fn, const std::string& argument) {
  try {
    fn();
    FAIL() << "expected ArgumentError naming '" << argument << "'";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
  }
}

}  // namespace flashkernel::testing
