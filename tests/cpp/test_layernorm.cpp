// add_layernorm and add_rms_norm against their double-precision CPU reference: all three dtypes,
// with and without residual / bias / affine, odd row and column counts, every width class of the
// vector kernel (1-8 warps per row) and the scalar kernel (odd widths, unaligned pointers),
// in-place residual_out, NaN-poisoned outputs, argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "flashkernel/layernorm.h"
#include "flashkernel/status.h"
#include "reference/layernorm_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

template <typename T>
void check(std::int64_t rows, std::int64_t cols, bool with_residual, bool with_bias, bool affine, bool in_place,
           bool rms = false, std::int64_t misalign = 0) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) + " residual=" +
               std::to_string(with_residual) + " bias=" + std::to_string(with_bias) + " affine=" +
               std::to_string(affine) + " in_place=" + std::to_string(in_place) + " rms=" + std::to_string(rms) +
               " misalign=" + std::to_string(misalign) + " seed=" + std::to_string(seed));
  if (rms) with_bias = false;  // RMSNorm has no bias and no beta
  // A non-zero mean (offset 3) checks the variance does not cancel.
  auto x = testing::random_vector<T>(rows * cols, seed, 2.f, 4.f);
  auto res = testing::random_vector<T>(rows * cols, seed + 1);
  auto bias = testing::random_vector<T>(cols, seed + 2);
  auto gamma = testing::random_vector<T>(cols, seed + 3, 0.5f, 1.5f);
  auto beta = testing::random_vector<T>(cols, seed + 4);
  // misalign > 0: x starts misalign elements into its buffer (off the 16-byte vectors: the scalar kernel).
  std::vector<T> x_padded(misalign);
  x_padded.insert(x_padded.end(), x.begin(), x.end());
  DeviceBuffer<T> dx(x_padded), dres(res), dbias(bias), dgamma(gamma), dbeta(beta), dout(rows * cols),
      dsum(rows * cols);
  dout.poison();
  dsum.poison();
  T* sum_ptr = in_place && with_residual ? dres.get() : dsum.get();
  const T* x_ptr = dx.get() + misalign;
  const T* res_ptr = with_residual ? dres.get() : nullptr;
  const T* gamma_ptr = affine ? dgamma.get() : nullptr;
  if (rms) {
    add_rms_norm(x_ptr, res_ptr, gamma_ptr, dout.get(), sum_ptr, rows, cols, 1e-5f, dtype_of<T>());
  } else {
    add_layernorm(x_ptr, res_ptr, with_bias ? dbias.get() : nullptr, gamma_ptr, affine ? dbeta.get() : nullptr,
                  dout.get(), sum_ptr, rows, cols, 1e-5f, dtype_of<T>());
  }
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> want(rows * cols), want_sum(rows * cols);
  reference::add_layernorm(x.data(), with_residual ? res.data() : nullptr, with_bias ? bias.data() : nullptr,
                           affine ? gamma.data() : nullptr, affine && !rms ? beta.data() : nullptr, want.data(),
                           want_sum.data(), rows, cols, 1e-5, rms);
  // The sum is one rounding of an exact fp32 add: equal up to a rounding (fp32 sums of 3 terms may
  // round differently from the double sum). Output: O(1) values, a few roundings of T.
  const double tol = testing::rounding_tolerance<T>();
  EXPECT_EQ(testing::first_mismatch(in_place && with_residual ? dres.download() : dsum.download(), want_sum, 2 * tol,
                                    2 * tol),
            -1);
  EXPECT_EQ(testing::first_mismatch(dout.download(), want, 4 * tol, 4 * tol), -1);
}

FK_DTYPE_TEST_SUITE(AddLayerNormTest, testing::AllDtypes);

TYPED_TEST(AddLayerNormTest, MatchesReference) {
  FK_SKIP_WITHOUT_GPU();
  // Widths across every kernel instance: 1-8 vectors per lane with one warp per row, 2, 4 and 8
  // warps per row (just under and over each boundary), and odd widths (the scalar kernel).
  for (std::int64_t cols : {1, 7, 127, 256, 520, 768, 1000, 1024, 1032, 2048, 2056, 4096, 4104, 8184}) {
    for (std::int64_t rows : {1, 3, 37}) check<TypeParam>(rows, cols, true, true, true, false);
  }
  check<TypeParam>(5, 768, false, false, false, false);
  check<TypeParam>(5, 768, true, false, true, false);
  check<TypeParam>(5, 768, false, true, true, false);
  check<TypeParam>(9, 768, true, true, true, true);  // residual_out aliases residual (the engine's use)
  check<TypeParam>(2, 8192, true, true, true, false);
  check<TypeParam>(3, 8192, true, true, true, true);
  check<TypeParam>(3, 768, true, true, true, false, false, 1);  // unaligned x: the scalar kernel
}

TYPED_TEST(AddLayerNormTest, RmsNormMatchesReference) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t cols : {1, 7, 127, 768, 1032, 4096, 8192}) {
    for (std::int64_t rows : {1, 5}) check<TypeParam>(rows, cols, true, false, true, false, true);
  }
  check<TypeParam>(4, 4096, false, false, false, false, true);
  check<TypeParam>(9, 2048, true, false, true, true, true);
  check<TypeParam>(3, 768, true, false, true, false, true, 1);
}

TEST(AddLayerNormArgs, Errors) {
  float dummy = 0;
  auto call = [&](std::int64_t rows, std::int64_t cols, float eps, const void* x, void* out) {
    add_layernorm(x, nullptr, nullptr, nullptr, nullptr, out, nullptr, rows, cols, eps, DType::kFloat32);
  };
  auto expect_arg = [](auto fn, const char* arg) {
    try {
      fn();
      FAIL() << "expected ArgumentError for " << arg;
    } catch (const ArgumentError& e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
    }
  };
  expect_arg([&] { call(-1, 8, 1e-5f, &dummy, &dummy + 1); }, "rows");
  expect_arg([&] { call(1, 0, 1e-5f, &dummy, &dummy + 1); }, "cols");
  expect_arg([&] { call(1, 8193, 1e-5f, &dummy, &dummy + 1); }, "cols");
  expect_arg([&] { call(1, 8, 0.f, &dummy, &dummy + 1); }, "eps");
  expect_arg([&] { call(1, 8, 1e-5f, nullptr, &dummy); }, "x");
  expect_arg([&] { call(1, 8, 1e-5f, &dummy, nullptr); }, "out");
  expect_arg([&] { call(1, 8, 1e-5f, &dummy, &dummy); }, "out");
  // Elements are read and written one by one (fp32) or as 16-byte vectors: a pointer off its
  // element alignment would fault on the device, so it is rejected up front.
  alignas(16) static float buf[64];
  const auto off = [&](int bytes) { return reinterpret_cast<char*>(buf) + bytes; };
  expect_arg([&] { call(1, 8, 1e-5f, off(2), buf + 32); }, "x");
  expect_arg([&] { call(1, 8, 1e-5f, buf, off(130)); }, "out");
  expect_arg([&] {
    add_layernorm(buf, off(66), nullptr, nullptr, nullptr, buf + 32, nullptr, 1, 8, 1e-5f, DType::kFloat32);
  }, "residual");
  expect_arg([&] {
    add_layernorm(buf, nullptr, nullptr, off(1), nullptr, buf + 32, nullptr, 1, 8, 1e-5f, DType::kFloat16);
  }, "gamma");
  // rows == 0 launches nothing, even with null pointers.
  EXPECT_NO_THROW(call(0, 8, 1e-5f, nullptr, nullptr));
  // add_rms_norm shares the checks, under its own name.
  try {
    add_rms_norm(buf, nullptr, nullptr, buf + 32, nullptr, 1, 9000, 1e-5f, DType::kFloat32);
    FAIL() << "expected ArgumentError for cols";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "cols");
    EXPECT_NE(std::string(e.what()).find("add_rms_norm"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace flashkernel
