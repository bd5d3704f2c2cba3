// vector_add against its CPU reference: every dtype, odd and empty lengths, misaligned views,
// in-place use, and argument errors.
#include <gtest/gtest.h>

#include <tuple>

#include "flashkernel/status.h"
#include "flashkernel/vector_add.h"
#include "reference/elementwise_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

FK_DTYPE_TEST_SUITE(VectorAddTest, testing::AllDtypes);

// `offset` elements of slack at the front shift the arrays off 16-byte alignment.
template <typename T>
void check_vector_add(std::int64_t n, std::int64_t offset) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset) + " seed=" + std::to_string(seed));
  auto a = testing::random_vector<T>(n + offset, seed);
  auto b = testing::random_vector<T>(n + offset, seed + 1);
  DeviceBuffer<T> da(a), db(b), dout(n + offset);
  dout.poison();
  vector_add(da.get() + offset, db.get() + offset, dout.get() + offset, n, dtype_of<T>());
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> want(static_cast<std::size_t>(n));
  reference::vector_add(a.data() + offset, b.data() + offset, want.data(), n);
  auto got_all = dout.download();
  std::vector<T> got(got_all.begin() + offset, got_all.end());
  EXPECT_EQ(testing::first_mismatch(got, want, testing::rounding_tolerance<T>(), 0.0), -1);
}

TYPED_TEST(VectorAddTest, MatchesReferenceOnOddSizes) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t n : {1, 7, 8, 31, 127, 1000, 4099, 1 << 20, (1 << 20) + 3}) check_vector_add<TypeParam>(n, 0);
}

TYPED_TEST(VectorAddTest, MisalignedViewsTakeTheScalarPath) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t n : {1, 33, 5001}) check_vector_add<TypeParam>(n, 1);
}

TYPED_TEST(VectorAddTest, EmptyIsANoOp) {
  FK_SKIP_WITHOUT_GPU();
  EXPECT_NO_THROW(vector_add(nullptr, nullptr, nullptr, 0, dtype_of<TypeParam>()));
}

TEST(VectorAddGpu, InPlaceAliasingOutput) {
  FK_SKIP_WITHOUT_GPU();
  const std::int64_t n = 12345;
  auto a = testing::random_vector<float>(n, 7), b = testing::random_vector<float>(n, 8);
  DeviceBuffer<float> da(a), db(b);
  vector_add(da.get(), db.get(), da.get(), n, DType::kFloat32);
  std::vector<float> want(n);
  reference::vector_add(a.data(), b.data(), want.data(), n);
  EXPECT_EQ(testing::first_mismatch(da.download(), want, 1e-6, 0.0), -1);
}

// Argument validation happens before any CUDA call, so these run without a GPU.
TEST(VectorAddArguments, NegativeLengthNamesN) {
  try {
    vector_add(nullptr, nullptr, nullptr, -1, DType::kFloat32);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "n");
  }
}

TEST(VectorAddArguments, NullPointerNamesTheArgument) {
  float dummy = 0;
  try {
    vector_add(&dummy, nullptr, &dummy, 4, DType::kFloat32);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "b");
    EXPECT_NE(std::string(e.what()).find("vector_add"), std::string::npos);
  }
}

// The scalar path reads whole elements: a float pointer 2 bytes off (accepted before) faulted on the
// device. Each misaligned pointer is named.
TEST(VectorAddArguments, MisalignedElementsNameTheArgument) {
  alignas(16) static float buf[16];
  char* odd = reinterpret_cast<char*>(buf) + 2;
  for (const auto& [a, b, out, name] : {std::tuple<void*, void*, void*, const char*>{odd, buf, buf, "a"},
                                        {buf, odd, buf, "b"},
                                        {buf, buf, odd, "out"}}) {
    try {
      vector_add(a, b, out, 4, DType::kFloat32);
      ADD_FAILURE() << "expected ArgumentError naming " << name;
    } catch (const ArgumentError& e) {
      EXPECT_EQ(e.argument(), name);
    }
  }
  // 2-byte dtypes need 2-byte alignment only.
  try {
    vector_add(reinterpret_cast<char*>(buf) + 1, buf, buf, 4, DType::kFloat16);
    ADD_FAILURE() << "expected ArgumentError naming a";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "a");
  }
}

TEST(ReferenceVectorAdd, RoundsOnceFromDouble) {
  std::vector<__half> a = {__float2half(1.0f), __float2half(65504.f)};
  std::vector<__half> b = {__float2half(0.0004882812f), __float2half(65504.f)};
  std::vector<__half> out(2);
  reference::vector_add(a.data(), b.data(), out.data(), 2);
  EXPECT_EQ(__half2float(out[0]), 1.0f);  // 1 + 2^-11 rounds to even
  EXPECT_TRUE(std::isinf(__half2float(out[1])));
}

}  // namespace
}  // namespace flashkernel
