// gelu_linear against its CPU reference: both kernels (M <= 64 streaming, M > 64 tiled, both tile
// configs), both dtypes and GeLU forms, with and without bias, odd M, K and N tails of every
// granularity the kernels have (8, 64, 256), NaN-poisoned outputs, and argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "flashkernel/gelu_linear.h"
#include "flashkernel/status.h"
#include "reference/gelu_linear_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

// Max error relative to the output's scale (max |ref|): fp16 < 1e-3 (one fp16 rounding is 4.9e-4),
// bf16 < 8e-3 (one bf16 rounding is 3.9e-3).
template <typename T>
constexpr double scale_tolerance() {
  return std::is_same_v<T, __half> ? 1e-3 : 8e-3;
}

template <typename T>
void check_gelu_linear(std::int64_t m, std::int64_t k, std::int64_t n, bool with_bias, GeluApproximation act) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k) + " n=" + std::to_string(n) +
               " bias=" + std::to_string(with_bias) + " tanh=" + std::to_string(int(act)) +
               " seed=" + std::to_string(seed));
  // Weights scaled by 1/sqrt(k) keep pre-activations O(1), where GeLU is most curved.
  const float ws = 2.0f / std::sqrt(float(k));
  auto x = testing::random_vector<T>(m * k, seed);
  auto w = testing::random_vector<T>(n * k, seed + 1, -ws, ws);
  auto b = testing::random_vector<T>(n, seed + 2);
  DeviceBuffer<T> dx(x), dw(w), db(b), dout(m * n);
  dout.poison();
  gelu_linear(dx.get(), dw.get(), with_bias ? db.get() : nullptr, dout.get(), m, n, k, dtype_of<T>(), act);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> want(static_cast<std::size_t>(m * n));
  reference::gelu_linear(x.data(), w.data(), with_bias ? b.data() : nullptr, want.data(), m, n, k, act);
  double scale = 0;
  for (const T& v : want) scale = std::max(scale, std::abs(double(to_float(v))));
  EXPECT_EQ(testing::first_mismatch(dout.download(), want, 0.0, scale_tolerance<T>() * scale), -1);
}

template <typename T>
class GeluLinearTest : public ::testing::Test {};
using HalfTypes = ::testing::Types<__half, __nv_bfloat16>;
TYPED_TEST_SUITE(GeluLinearTest, HalfTypes);

TYPED_TEST(GeluLinearTest, SmallMStreamingPath) {
  FK_SKIP_WITHOUT_GPU();
  // M 1..64 covers all three m-tile counts; n=8 (one CTA), 200 (not a multiple of 32), and an
  // n large enough on any GPU to select 4 n-tiles per CTA.
  struct Shape { std::int64_t m, k, n; };
  for (Shape s : {Shape{1, 64, 8}, Shape{7, 72, 200}, Shape{16, 264, 24}, Shape{17, 512, 40}, Shape{33, 768, 136},
                  Shape{64, 96, 16}, Shape{5, 520, 131072 / 8}}) {
    for (auto act : {GeluApproximation::kNone, GeluApproximation::kTanh}) {
      check_gelu_linear<TypeParam>(s.m, s.k, s.n, true, act);
    }
    check_gelu_linear<TypeParam>(s.m, s.k, s.n, false, GeluApproximation::kNone);
  }
}

TYPED_TEST(GeluLinearTest, TiledPath) {
  FK_SKIP_WITHOUT_GPU();
  struct Shape { std::int64_t m, k, n; };
  // 65 and 127: one partial tile; k = 8 and 136: K tails inside one 64-column stage; 1100 x 2048
  // and 2000 x 1544 (a partial N tile): enough 128x128 tiles for the large-tile kernels (wgmma on
  // Hopper) on GPUs with up to 144 SMs. Every shape runs twice on Hopper: the default kernels and
  // the portable mma.sync ones (FLASHKERNEL_GELU_LINEAR_KERNEL=sm80).
  for (const char* mode : {"auto", "sm80"}) {
    ::setenv("FLASHKERNEL_GELU_LINEAR_KERNEL", mode, 1);
    SCOPED_TRACE(std::string("kernel mode ") + mode);
    for (Shape s : {Shape{65, 64, 8}, Shape{127, 136, 72}, Shape{300, 8, 264}, Shape{513, 768, 3072},
                    Shape{1100, 72, 2048}, Shape{2000, 136, 1544}}) {
      for (auto act : {GeluApproximation::kNone, GeluApproximation::kTanh}) {
        check_gelu_linear<TypeParam>(s.m, s.k, s.n, true, act);
      }
      check_gelu_linear<TypeParam>(s.m, s.k, s.n, false, GeluApproximation::kTanh);
    }
  }
  ::unsetenv("FLASHKERNEL_GELU_LINEAR_KERNEL");
}

TYPED_TEST(GeluLinearTest, EmptyMIsANoOp) {
  FK_SKIP_WITHOUT_GPU();
  DeviceBuffer<TypeParam> w(64);
  EXPECT_NO_THROW(gelu_linear(nullptr, w.get(), nullptr, nullptr, 0, 8, 8, dtype_of<TypeParam>()));
}

// Argument validation happens before any CUDA call, so these run without a GPU.
std::string argument_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("gelu_linear"), std::string::npos);
    return e.argument();
  }
  ADD_FAILURE() << "expected ArgumentError";
  return "";
}

TEST(GeluLinearArguments, BadShapesNameTheArgument) {
  alignas(16) static __half buf[64];
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, -1, 8, 8, DType::kFloat16); }), "m");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 1, 12, 8, DType::kFloat16); }), "n");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 1, 8, 0, DType::kFloat16); }), "k");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 1, 8, 20, DType::kFloat16); }), "k");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 1, 8, 8, DType::kFloat32); }), "dtype");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 1, 8, 8, DType::kFloat16, GeluApproximation(7)); }),
            "approximate");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, nullptr, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "weight");
  EXPECT_EQ(argument_of([&] { gelu_linear(nullptr, buf, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "x");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, nullptr, 1, 8, 8, DType::kFloat16); }), "out");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf + 1, buf, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "x");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf + 4, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "weight");
}

TEST(ReferenceGeluLinear, ForwardsMatchClosedForms) {
  // gelu(0) = 0, gelu(large) = x, gelu(-large) = 0, and the two forms differ at 1 by a small,
  // nonzero amount (so a mixed-up form cannot pass the GPU tests).
  EXPECT_EQ(reference::gelu(0.0, GeluApproximation::kNone), 0.0);
  EXPECT_NEAR(reference::gelu(10.0, GeluApproximation::kTanh), 10.0, 1e-12);
  EXPECT_NEAR(reference::gelu(-10.0, GeluApproximation::kNone), 0.0, 1e-12);
  const double e = reference::gelu(1.0, GeluApproximation::kNone), t = reference::gelu(1.0, GeluApproximation::kTanh);
  EXPECT_NEAR(e, 0.5 * (1 + std::erf(1 / std::sqrt(2.0))), 1e-15);
  EXPECT_GT(std::abs(e - t), 1e-5);
  EXPECT_LT(std::abs(e - t), 1e-3);
}

}  // namespace
}  // namespace flashkernel
