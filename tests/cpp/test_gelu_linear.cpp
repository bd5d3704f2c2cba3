// gelu_linear against its CPU reference: both kernels (M <= 64 streaming, M > 64 tiled, both tile
// configs), both dtypes and GeLU forms, with and without bias, odd M, K and N tails of every
// granularity the kernels have (8, 64, 256), NaN-poisoned outputs, and argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "common/launch.h"
#include "common/smem_budget.h"
#include "flashkernel/gelu_linear.h"
#include "flashkernel/status.h"
#include "gelu_linear/gelu_linear_config.h"
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

// One random problem: inputs on the host and the device, and x @ W^T in double computed once (the
// CPU reference's expensive part), shared by every bias/GeLU variant and kernel mode run on it.
template <typename T>
struct Problem {
  Problem(std::int64_t m_, std::int64_t k_, std::int64_t n_)
      : m(m_), k(k_), n(n_), seed(testing::fresh_seed()),
        // Weights scaled by 1/sqrt(k) keep pre-activations O(1), where GeLU is most curved.
        x(testing::random_vector<T>(m * k, seed)),
        w(testing::random_vector<T>(n * k, seed + 1, -2.0f / std::sqrt(float(k)), 2.0f / std::sqrt(float(k)))),
        b(testing::random_vector<T>(n, seed + 2)),
        dx(x), dw(w), db(b), pre(reference::matmul_nt(x.data(), w.data(), m, n, k)) {}
  std::int64_t m, k, n;
  std::uint64_t seed;
  std::vector<T> x, w, b;
  DeviceBuffer<T> dx, dw, db;
  std::vector<double> pre;
};

// Runs one bias/GeLU variant on p and compares with the reference, once per backend in `backends`.
template <typename T>
void check_gelu_linear(const Problem<T>& p, bool with_bias, GeluApproximation act,
                       const std::vector<GeluLinearBackend>& backends) {
  SCOPED_TRACE("m=" + std::to_string(p.m) + " k=" + std::to_string(p.k) + " n=" + std::to_string(p.n) +
               " bias=" + std::to_string(with_bias) + " tanh=" + std::to_string(int(act)) +
               " seed=" + std::to_string(p.seed));
  std::vector<T> want(static_cast<std::size_t>(p.m * p.n));
  reference::gelu_epilogue(p.pre, with_bias ? p.b.data() : nullptr, want.data(), p.m, p.n, act);
  double scale = 0;
  for (const T& v : want) scale = std::max(scale, std::abs(double(to_float(v))));
  for (const GeluLinearBackend backend : backends) {
    SCOPED_TRACE("backend " + std::to_string(int(backend)));
    DeviceBuffer<T> dout(p.m * p.n);
    dout.poison();
    gelu_linear(p.dx.get(), p.dw.get(), with_bias ? p.db.get() : nullptr, dout.get(), p.m, p.n, p.k, dtype_of<T>(),
                act, nullptr, backend);
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(testing::first_mismatch(dout.download(), want, 0.0, scale_tolerance<T>() * scale), -1);
  }
}

// The three variants every shape runs: both GeLU forms with bias, and one form without bias.
template <typename T>
void check_variants(const Problem<T>& p, GeluApproximation form_without_bias,
                    const std::vector<GeluLinearBackend>& backends = {GeluLinearBackend::kAuto}) {
  for (auto act : {GeluApproximation::kNone, GeluApproximation::kTanh}) check_gelu_linear(p, true, act, backends);
  check_gelu_linear(p, false, form_without_bias, backends);
}

// Every backend a caller can name on this GPU: the automatic choice and the portable mma.sync
// kernels everywhere, each Hopper variant on compute capability 9.x.
std::vector<GeluLinearBackend> backends_on_this_gpu() {
  std::vector<GeluLinearBackend> k{GeluLinearBackend::kAuto, GeluLinearBackend::kSm80};
  if (detail::current_compute_major() == 9) {
    k.insert(k.end(), {GeluLinearBackend::kSm90Wide, GeluLinearBackend::kSm90Mid, GeluLinearBackend::kSm90Narrow,
                       GeluLinearBackend::kSm90PingPong});
  }
  return k;
}

FK_DTYPE_TEST_SUITE(GeluLinearTest, testing::HalfDtypes);

TYPED_TEST(GeluLinearTest, SmallMStreamingPath) {
  FK_SKIP_WITHOUT_GPU();
  // M 1..64 covers all three m-tile counts; n=8 (one CTA), 200 (not a multiple of 32), and an
  // n large enough on any GPU to select 4 n-tiles per CTA.
  struct Shape { std::int64_t m, k, n; };
  for (Shape s : {Shape{1, 64, 8}, Shape{7, 72, 200}, Shape{16, 264, 24}, Shape{17, 512, 40}, Shape{33, 768, 136},
                  Shape{64, 96, 16}, Shape{5, 520, 131072 / 8}, Shape{3, 264, 4096}}) {
    check_variants(Problem<TypeParam>(s.m, s.k, s.n), GeluApproximation::kNone);
  }
}

// Both ways of filling the M <= 16 ring, each at every column tile the library launches: thread
// copies (NT = 1, 4: every GPU) and TMA (NT = 2, 4, 8: sm_90, the default there), on shapes with
// tails in every direction (N not a multiple of the CTA's columns, K not of the 64-column box or
// the 256-column stage, M not of 16). Off sm_90 the TMA launcher must decline, launching nothing.
TYPED_TEST(GeluLinearTest, SmallMEveryFillAndColumnTile) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  namespace gd = gelu_linear_detail;
  const bool hopper = detail::current_compute_major() == 9;
  const int smem = detail::current_smem_optin_bytes();
  using Launch = std::function<bool(const gd::Problem&)>;
  const std::vector<std::pair<const char*, Launch>> launches = {
      {"threads nt1", [&](const gd::Problem& q) { return gd::launch_small_m<T, 1, 1>(q, smem, nullptr), true; }},
      {"threads nt4", [&](const gd::Problem& q) { return gd::launch_small_m<T, 1, 4>(q, smem, nullptr), true; }},
      {"tma nt2", [&](const gd::Problem& q) { return gd::launch_small_m_tma<T, 2>(q, smem, nullptr); }},
      {"tma nt4", [&](const gd::Problem& q) { return gd::launch_small_m_tma<T, 4>(q, smem, nullptr); }},
      {"tma nt8", [&](const gd::Problem& q) { return gd::launch_small_m_tma<T, 8>(q, smem, nullptr); }},
  };
  struct Shape { int m, k, n; };
  for (Shape s : {Shape{1, 8, 8}, Shape{7, 72, 1000}, Shape{16, 4104, 264}, Shape{3, 776, 72}, Shape{1, 256, 4096}}) {
    const Problem<T> p(s.m, s.k, s.n);
    std::vector<T> want(static_cast<std::size_t>(s.m * s.n));
    reference::gelu_epilogue(p.pre, p.b.data(), want.data(), s.m, s.n, GeluApproximation::kTanh);
    double scale = 0;
    for (const T& v : want) scale = std::max(scale, std::abs(double(to_float(v))));
    for (const auto& [name, launch] : launches) {
      SCOPED_TRACE(std::string(name) + " m=" + std::to_string(s.m) + " k=" + std::to_string(s.k) +
                   " n=" + std::to_string(s.n) + " seed=" + std::to_string(p.seed));
      DeviceBuffer<T> dout(s.m * s.n);
      dout.poison();
      const gd::Problem gp{p.dx.get(), p.dw.get(), p.db.get(), dout.get(), s.m, s.n, s.k, GeluApproximation::kTanh};
      const bool launched = launch(gp);
      if (std::string(name).rfind("tma", 0) == 0 && !hopper) {
        EXPECT_FALSE(launched);
        continue;
      }
      ASSERT_TRUE(launched);
      FK_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(testing::first_mismatch(dout.download(), want, 0.0, scale_tolerance<T>() * scale), -1);
    }
  }
}

// The TMA-filled kernel's column tile: the widest of 8, 4, 2 that still gives ~one CTA per SM.
TEST(GeluLinearConfig, TmaColumnTileKeepsEverySmBusy) {
  using gelu_linear_detail::small_m_tma_nt;
  EXPECT_EQ(small_m_tma_nt(16384, 132), 8);  // 256 CTAs
  EXPECT_EQ(small_m_tma_nt(4096, 132), 4);   // 128 CTAs (NT = 8: 64)
  EXPECT_EQ(small_m_tma_nt(3072, 132), 2);   // 192 CTAs (NT = 4: 96)
  EXPECT_EQ(small_m_tma_nt(768, 132), 2);    // fewer columns than SMs: the narrowest TMA tile
  EXPECT_EQ(small_m_tma_nt(8, 132), 2);
  EXPECT_EQ(small_m_tma_nt(4096, 57), 8);  // fewer SMs, wider tiles
  for (std::int64_t n = 8; n <= 65536; n += 8) {
    const int nt = small_m_tma_nt(n, 132);
    ASSERT_TRUE(nt == 2 || nt == 4 || nt == 8) << n;
    if (nt > 2) {
      ASSERT_GE((n + 8 * nt - 1) / (8 * nt) * 10, 9 * 132) << n;
    }
  }
}

// The 64x64 tiled kernel split over K across a cluster (sm_90), at every split the library
// launches, on shapes with tails in M, N and K (K's 64-column tiles not a multiple of the split,
// so the ranks' shares differ). Off sm_90 the launcher must decline, launching nothing.
TYPED_TEST(GeluLinearTest, TiledSplitKOverACluster) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const bool hopper = detail::current_compute_major() == 9;
  struct Shape { int m, k, n; };
  for (Shape s : {Shape{65, 1032, 72}, Shape{128, 3072, 768}, Shape{200, 1544, 136}, Shape{97, 520, 8}}) {
    const Problem<T> p(s.m, s.k, s.n);
    std::vector<T> want(static_cast<std::size_t>(s.m * s.n));
    reference::gelu_epilogue(p.pre, p.b.data(), want.data(), s.m, s.n, GeluApproximation::kNone);
    double scale = 0;
    for (const T& v : want) scale = std::max(scale, std::abs(double(to_float(v))));
    for (int split : {2, 4, 8}) {
      SCOPED_TRACE("split " + std::to_string(split) + " m=" + std::to_string(s.m) + " k=" + std::to_string(s.k) +
                   " n=" + std::to_string(s.n) + " seed=" + std::to_string(p.seed));
      DeviceBuffer<T> dout(s.m * s.n);
      dout.poison();
      const gelu_linear_detail::Problem gp{p.dx.get(), p.dw.get(), p.db.get(), dout.get(),
                                           s.m, s.n, s.k, GeluApproximation::kNone};
      const bool launched = gelu_linear_detail::launch_tiled_split<T>(gp, split, nullptr);
      if (!hopper || (s.k + 63) / 64 < split) {
        EXPECT_FALSE(launched);
        continue;
      }
      ASSERT_TRUE(launched);
      FK_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(testing::first_mismatch(dout.download(), want, 0.0, scale_tolerance<T>() * scale), -1);
    }
  }
  // Through the public API: a shape the automatic choice splits (24 tiles, 48 k-tiles: split 8).
  ASSERT_EQ(gelu_linear_detail::tiled_split_k(24, 3072, 132), 8);
  check_variants(Problem<T>(128, 3072, 768), GeluApproximation::kTanh);
}

// Split-K only where the output's 64x64 tiles leave the GPU's CTA slots empty, and never below
// 6 k-tiles per CTA.
TEST(GeluLinearConfig, SplitKOnlyWhereTilesLeaveTheGpuIdle) {
  using gelu_linear_detail::tiled_split_k;
  EXPECT_EQ(tiled_split_k(24, 3072, 132), 8);   // M=128 N=768: 192 CTAs, 6 k-tiles each
  EXPECT_EQ(tiled_split_k(96, 3072, 132), 1);   // M=512 N=768 or M=128 N=3072: measured slower split
  EXPECT_EQ(tiled_split_k(96, 768, 132), 1);
  EXPECT_EQ(tiled_split_k(33, 3072, 132), 8);   // a quarter of the SMs: 264 CTAs, 2 per SM
  EXPECT_EQ(tiled_split_k(34, 3072, 132), 1);
  EXPECT_EQ(tiled_split_k(24, 3072, 78), 1);    // fewer SMs: 24 tiles already busy 31% of 78
  EXPECT_EQ(tiled_split_k(19, 3072, 78), 8);
  EXPECT_EQ(tiled_split_k(24, 768, 132), 2);    // 12 k-tiles: at most 2 shares of 6
  EXPECT_EQ(tiled_split_k(384, 3072, 132), 1);  // enough tiles already
  EXPECT_EQ(tiled_split_k(24, 704, 132), 1);    // 11 k-tiles: too short to share
  for (std::int64_t tiles = 1; tiles <= 512; ++tiles) {
    for (std::int64_t k : {64, 384, 768, 1000, 3072, 16384}) {
      const int split = tiled_split_k(tiles, k, 132);
      ASSERT_TRUE(split == 1 || split == 2 || split == 4 || split == 8);
      if (split > 1) {
        ASSERT_LE(tiles * 4, 132);
        ASSERT_LE(tiles * split, 132 * 2);
        ASSERT_GE((k + 63) / 64, 6 * split);
      }
    }
  }
}

// The compact small-M rings, which sm_86/sm_89 take (their 99 KiB opt-in limit is below the deep
// rings' 100-108 KiB), run on any GPU when the launcher is given that limit: this covers them on
// the H100/H200 the suite runs on.
TYPED_TEST(GeluLinearTest, SmallMCompactRingsOfSm86And89) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  struct Shape { int m, k, n; };
  for (Shape s : {Shape{20, 776, 40}, Shape{40, 1032, 24}, Shape{64, 264, 8}}) {
    const Problem<T> p(s.m, s.k, s.n);
    SCOPED_TRACE("m=" + std::to_string(s.m) + " k=" + std::to_string(s.k) + " n=" + std::to_string(s.n) +
                 " seed=" + std::to_string(p.seed));
    std::vector<T> want(static_cast<std::size_t>(s.m * s.n));
    reference::gelu_epilogue(p.pre, p.b.data(), want.data(), s.m, s.n, GeluApproximation::kTanh);
    double scale = 0;
    for (const T& v : want) scale = std::max(scale, std::abs(double(to_float(v))));
    DeviceBuffer<T> dout(s.m * s.n);
    dout.poison();
    const gelu_linear_detail::Problem gp{p.dx.get(), p.dw.get(), p.db.get(), dout.get(),
                                         s.m, s.n, s.k, GeluApproximation::kTanh};
    const int sm86_limit = detail::arch_smem_optin_bytes(86);
    ASSERT_FALSE((gelu_linear_detail::small_m_uses_deep_ring<2, 1>(sm86_limit)));
    ASSERT_FALSE((gelu_linear_detail::small_m_uses_deep_ring<4, 1>(sm86_limit)));
    auto launch = [&] {
      if (s.m <= 32) {
        gelu_linear_detail::launch_small_m<T, 2, 1>(gp, sm86_limit, nullptr);
      } else {
        gelu_linear_detail::launch_small_m<T, 4, 1>(gp, sm86_limit, nullptr);
      }
    };
    if (detail::current_smem_optin_bytes() < sm86_limit) {
      // A GPU (or FLASHKERNEL_FORCE_ARCH=75) below the sm_86 limit: that configuration is refused
      // with the shared-memory error, never launched past the limit.
      EXPECT_THROW(launch(), Error);
      continue;
    }
    launch();
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(testing::first_mismatch(dout.download(), want, 0.0, scale_tolerance<T>() * scale), -1);
  }
}

TYPED_TEST(GeluLinearTest, TiledPath) {
  FK_SKIP_WITHOUT_GPU();
  struct Shape { std::int64_t m, k, n; };
  // 65 and 127: one partial tile; k = 8 and 136: K tails inside one 64-column stage; 513 x 520 x
  // 1032: 5 x 9 large tiles, so the 64x64-tile kernel on GPUs with more than 45 SMs, with 9 K
  // stages (its 4-deep cp.async ring wraps twice, and the last stage is an 8-column tail), a 1-row
  // partial M tile and an 8-column partial N tile; 1100 x 2048 and 2000 x 1544 (a partial N tile):
  // enough 128x128 tiles for the large-tile kernels (wgmma on Hopper) on GPUs with up to 144 SMs.
  // 1537 x 840 x 3080: 13 x 25 tiles of 128x128 (13 x 17 of 128x192, 13 x 13 of 128x256), so
  // the persistent Hopper kernels run up to 3 tiles per block (the ring's phases carry over tiles;
  // ping-pong consumers alternate), with 14 k-steps, more than two trips round the 6-stage ring (a consumer running
  // ahead would read stale stages), the last an 8-column tail. 257 x 1096 x 4104: 3 x 33 tiles of
  // 128x128, fewer than the SMs of an H100 but over half (the Hopper kernel takes it), a 1-row
  // last M tile, K = 1096 (18 k-steps, past ping-pong's bound: the cooperative variants).
  // Every shape runs once per backend, on the same inputs: the default choice, the portable
  // mma.sync kernels (GeluLinearBackend::kSm80) and, on Hopper, each variant of the
  // warp-specialized kernel.
  for (Shape s : {Shape{65, 64, 8}, Shape{127, 136, 72}, Shape{300, 8, 264}, Shape{513, 520, 1032},
                  Shape{1100, 72, 2048}, Shape{2000, 136, 1544}, Shape{1537, 840, 3080},
                  Shape{257, 1096, 4104}}) {
    check_variants(Problem<TypeParam>(s.m, s.k, s.n), GeluApproximation::kTanh, backends_on_this_gpu());
  }
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
  EXPECT_EQ(argument_of([&] {
              gelu_linear(buf, buf, nullptr, buf, 1, 8, 8, DType::kFloat16, GeluApproximation::kNone, nullptr,
                          GeluLinearBackend(6));
            }),
            "backend");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, nullptr, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "weight");
  EXPECT_EQ(argument_of([&] { gelu_linear(nullptr, buf, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "x");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, nullptr, 1, 8, 8, DType::kFloat16); }), "out");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf + 1, buf, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "x");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf + 4, nullptr, buf, 1, 8, 8, DType::kFloat16); }), "weight");
}

// The kernels' tile arithmetic is 32-bit: an m near 2^31 (accepted while it was <= INT_MAX) made
// m + BM - 1 wrap, and the launch silently computed nothing. Such extents, and grids of more than
// 2^31 - 1 tiles, are rejected before any CUDA call.
TEST(GeluLinearArguments, ExtentsNear2To31AreRejected) {
  alignas(16) static __half buf[64];
  const std::int64_t near_int_max = std::int64_t(INT_MAX) - 7;  // a multiple of 8, as n and k must be
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, near_int_max, 8, 8, DType::kFloat16); }), "m");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 100, near_int_max, 8, DType::kFloat16); }), "n");
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, 100, 8, near_int_max, DType::kFloat16); }), "k");
  const std::int64_t big = std::int64_t(1) << 30;
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, nullptr, buf, big, big, 8, DType::kFloat16); }), "m");
}

// The bias is read one 2-byte element at a time: an odd address would fault on the device.
TEST(GeluLinearArguments, MisalignedBiasIsRejected) {
  alignas(16) static __half buf[64];
  const void* odd = reinterpret_cast<const char*>(buf) + 1;
  EXPECT_EQ(argument_of([&] { gelu_linear(buf, buf, odd, buf, 1, 8, 8, DType::kFloat16); }), "bias");
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

TEST(ReferenceGeluLinear, MatmulEqualsPlainSums) {
  // Small integers: every product and sum is exact, so the split accumulation must equal a plain
  // loop exactly, for every k around its unroll of 4 (and the epilogue must add the bias).
  for (std::int64_t k : {1, 3, 4, 5, 7, 8, 9}) {
    const std::int64_t m = 3, n = 2;
    std::vector<float> x(m * k), w(n * k), bias = {0.5f, -2.f};
    for (std::int64_t i = 0; i < m * k; ++i) x[i] = float(i % 7) - 3.f;
    for (std::int64_t i = 0; i < n * k; ++i) w[i] = float(i % 5) - 1.f;
    const auto pre = reference::matmul_nt(x.data(), w.data(), m, n, k);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double want = 0;
        for (std::int64_t l = 0; l < k; ++l) want += double(x[i * k + l]) * double(w[j * k + l]);
        EXPECT_EQ(pre[i * n + j], want) << "k=" << k << " i=" << i << " j=" << j;
      }
    std::vector<float> out(m * n);
    reference::gelu_epilogue(pre, bias.data(), out.data(), m, n, GeluApproximation::kNone);
    EXPECT_EQ(out[1], float(reference::gelu(pre[1] - 2.0, GeluApproximation::kNone))) << "k=" << k;
  }
}

}  // namespace
}  // namespace flashkernel
