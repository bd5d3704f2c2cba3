// reduce_full / reduce_rows against the double-precision CPU reference: every dtype, odd and empty
// sizes, misaligned starts, NaN propagation, run-to-run bit-identity, argument errors.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "flashkernel/reduce.h"
#include "flashkernel/status.h"
#include "reference/reduce_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

FK_DTYPE_TEST_SUITE(ReduceTest, testing::AllDtypes);

// Sum tolerance: one rounding of the result to T, plus fp32 accumulation error, which for any
// summation order is bounded by a small multiple of eps_fp32 * sum|x| (1e-5 leaves headroom).
template <typename T>
double sum_tolerance(double ref, double abs_sum) {
  return testing::rounding_tolerance<T>() * std::abs(ref) + 1e-5 * abs_sum;
}

template <typename T>
T run_full(const DeviceBuffer<T>& x, std::int64_t offset, std::int64_t n, ReduceOp op) {
  DeviceBuffer<T> out(1);
  out.poison();
  const std::size_t ws_bytes = reduce_workspace_bytes(n);
  DeviceBuffer<unsigned char> ws(static_cast<std::int64_t>(ws_bytes));
  ws.poison();  // the kernel must not rely on the workspace's contents
  reduce_full(x.get() + offset, out.get(), n, dtype_of<T>(), op, ws.get(), ws_bytes);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  return out.download()[0];
}

// `offset` elements of slack at the front shift the array off 16-byte alignment.
template <typename T>
void check_full(std::int64_t n, std::int64_t offset) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset) + " seed=" + std::to_string(seed));
  auto host = testing::random_vector<T>(n + offset, seed);
  DeviceBuffer<T> x(host);
  const T* hx = host.data() + offset;
  const double ref_sum = reference::sum(hx, n);
  const double got_sum = to_float(run_full(x, offset, n, ReduceOp::kSum));
  EXPECT_LE(std::abs(got_sum - ref_sum), sum_tolerance<T>(ref_sum, reference::abs_sum(hx, n)))
      << "sum: got " << got_sum << " want " << ref_sum;
  if (n > 0) {
    // max is exact: the largest element, converted to fp32 and back without rounding.
    EXPECT_EQ(double(to_float(run_full(x, offset, n, ReduceOp::kMax))), reference::max(hx, n));
  }
}

TYPED_TEST(ReduceTest, FullMatchesReferenceOnOddSizes) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t n : {0, 1, 7, 31, 32, 33, 127, 1023, 4099, 40000, (1 << 20) + 7, (1 << 24) + 3}) {
    check_full<TypeParam>(n, 0);
  }
}

TYPED_TEST(ReduceTest, FullMisalignedStarts) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t offset : {1, 3, 5}) {
    for (std::int64_t n : {1, 6, 33, 5001, (1 << 20) + 1}) check_full<TypeParam>(n, offset);
  }
}

template <typename T>
void check_rows(std::int64_t rows, std::int64_t cols, std::int64_t offset) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) + " offset=" +
               std::to_string(offset) + " seed=" + std::to_string(seed));
  auto host = testing::random_vector<T>(rows * cols + offset, seed);
  DeviceBuffer<T> x(host);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    if (op == ReduceOp::kMax && cols == 0) continue;
    DeviceBuffer<T> out(rows);
    out.poison();
    reduce_rows(x.get() + offset, out.get(), rows, cols, dtype_of<T>(), op);
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    auto got = out.download();
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = host.data() + offset + r * cols;
      const double g = to_float(got[r]);
      if (op == ReduceOp::kSum) {
        const double want = reference::sum(row, cols);
        ASSERT_LE(std::abs(g - want), sum_tolerance<T>(want, reference::abs_sum(row, cols))) << "sum of row " << r;
      } else {
        ASSERT_EQ(g, reference::max(row, cols)) << "max of row " << r;
      }
    }
  }
}

// Row lengths cover every kernel choice: 4/8/16/32-lane slices, warp per row, block per row.
TYPED_TEST(ReduceTest, RowsMatchReferenceForEveryRowLength) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t cols : {0, 1, 7, 31, 32, 33, 64, 100, 127, 128, 255, 1000, 2048, 2049, 4096, 10007}) {
    check_rows<TypeParam>(37, cols, 0);
  }
  check_rows<TypeParam>(4099, 128, 0);
  check_rows<TypeParam>(0, 5, 0);
}

TYPED_TEST(ReduceTest, RowsWithMisalignedStarts) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t cols : {5, 33, 129, 3001}) check_rows<TypeParam>(19, cols, 1);
}

TEST(ReduceGpu, MaxPropagatesNaN) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t n : {7, 5000, (1 << 20) + 3}) {
    auto host = testing::random_vector<float>(n, testing::fresh_seed());
    host[n / 2] = std::numeric_limits<float>::quiet_NaN();
    DeviceBuffer<float> x(host);
    EXPECT_TRUE(std::isnan(run_full(x, 0, n, ReduceOp::kMax))) << "n=" << n;
    DeviceBuffer<float> out(1);
    reduce_rows(x.get(), out.get(), 1, n, DType::kFloat32, ReduceOp::kMax);
    EXPECT_TRUE(std::isnan(out.download()[0])) << "row of n=" << n;
  }
}

TEST(ReduceGpu, BitIdenticalAcrossRuns) {
  FK_SKIP_WITHOUT_GPU();
  const std::int64_t n = (1 << 24) + 5;
  DeviceBuffer<float> x(testing::random_vector<float>(n, testing::fresh_seed()));
  const float first = run_full(x, 0, n, ReduceOp::kSum);
  for (int i = 0; i < 10; ++i) {
    const float again = run_full(x, 0, n, ReduceOp::kSum);
    EXPECT_EQ(std::memcmp(&first, &again, sizeof(float)), 0) << "run " << i << ": " << again << " vs " << first;
  }
}

// Argument validation happens before any CUDA call, so these run without a GPU.
using testing::expect_argument_error;

TEST(ReduceArguments, BadArgumentsAreNamed) {
  float dummy[4] = {};
  expect_argument_error([&] { reduce_full(dummy, dummy, -1, DType::kFloat32, ReduceOp::kSum, nullptr, 0); }, "n");
  expect_argument_error([&] { reduce_full(nullptr, dummy, 4, DType::kFloat32, ReduceOp::kSum, nullptr, 0); }, "x");
  expect_argument_error([&] { reduce_full(dummy, nullptr, 4, DType::kFloat32, ReduceOp::kSum, nullptr, 0); }, "out");
  expect_argument_error([&] { reduce_full(dummy, dummy, 0, DType::kFloat32, ReduceOp::kMax, nullptr, 0); }, "n");
  expect_argument_error(
      [&] { reduce_full(dummy, dummy, 4, DType::kFloat32, static_cast<ReduceOp>(7), nullptr, 0); }, "op");
  expect_argument_error(
      [&] { reduce_full(reinterpret_cast<char*>(dummy) + 1, dummy, 4, DType::kFloat32, ReduceOp::kSum, nullptr, 0); },
      "x");
  expect_argument_error([&] { reduce_rows(dummy, dummy, -1, 4, DType::kFloat32, ReduceOp::kSum); }, "rows");
  expect_argument_error([&] { reduce_rows(dummy, dummy, 2, -4, DType::kFloat32, ReduceOp::kSum); }, "cols");
  expect_argument_error([&] { reduce_rows(dummy, dummy, 2, 0, DType::kFloat32, ReduceOp::kMax); }, "cols");
  expect_argument_error([&] { reduce_rows(nullptr, dummy, 2, 2, DType::kFloat16, ReduceOp::kSum); }, "x");
  expect_argument_error([&] { reduce_rows(dummy, nullptr, 2, 2, DType::kFloat16, ReduceOp::kSum); }, "out");
  // out is written as one element of the dtype, the workspace holds an atomic counter and fp32
  // partials: off their alignment they would fault on the device.
  char* bytes = reinterpret_cast<char*>(dummy);
  expect_argument_error([&] { reduce_full(dummy, bytes + 2, 4, DType::kFloat32, ReduceOp::kSum, nullptr, 0); }, "out");
  expect_argument_error([&] { reduce_full(dummy, dummy, 4, DType::kFloat32, ReduceOp::kSum, bytes + 1, 8); },
                        "workspace");
  expect_argument_error([&] { reduce_rows(dummy, bytes + 1, 2, 2, DType::kFloat16, ReduceOp::kSum); }, "out");
}

TEST(ReduceGpuArguments, TooSmallWorkspaceNamesIt) {
  FK_SKIP_WITHOUT_GPU();
  const std::int64_t n = 1 << 22;
  DeviceBuffer<float> x(n), out(1);
  ASSERT_GT(reduce_workspace_bytes(n), 0u);
  expect_argument_error([&] { reduce_full(x.get(), out.get(), n, DType::kFloat32, ReduceOp::kSum, nullptr, 0); },
                        "workspace_bytes");
}

TEST(ReduceReference, MaxPropagatesNaNAndSumIsExactForSmallIntegers) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> v = {1.f, nan, 3.f};
  EXPECT_TRUE(std::isnan(reference::max(v.data(), 3)));
  std::vector<float> w = {1.f, -2.f, 3.f};
  EXPECT_EQ(reference::max(w.data(), 3), 3.0);
  EXPECT_EQ(reference::sum(w.data(), 3), 2.0);
  EXPECT_EQ(reference::abs_sum(w.data(), 3), 6.0);
}

}  // namespace
}  // namespace flashkernel
