// RoPE through the C++ API against the CPU reference: every dtype, both styles, table and fused
// variants, positions up to 2^17, GQA, partial rotary, [B, N, H, d] strides, in place, and
// argument errors (these run without a GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "flashkernel/rope.h"
#include "flashkernel/status.h"
#include "reference/rope_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

// One ulp of T at |v| (mantissa bits and smallest normal exponent of T).
template <typename T>
double ulp_of(double v) {
  constexpr int kMant = std::is_same_v<T, float> ? 23 : std::is_same_v<T, __half> ? 10 : 7;
  constexpr int kMinExp = std::is_same_v<T, __half> ? -14 : -126;
  int e = 0;
  std::frexp(std::abs(v), &e);
  return std::ldexp(1.0, std::max(e - 1, kMinExp) - kMant);
}

// Tolerance: ulp_T(max(|got|, |want|)) + 4 * eps32 * mag, mag = the output's own |p1| + |p2|
// (|a cos| + |b sin| for a' = a cos - b sin, |b cos| + |a sin| for b' = b cos + a sin; see the
// reference). Derivation, for b' (a' is symmetric), u = eps32 / 2 the fp32 unit roundoff:
//   * the kernel computes r = fmaf(b, c~, fl(a * s~)) from the same fp32 angle as the reference,
//     with c~, s~ from sincosf (or a float table built with it): CUDA documents <= 2 ulp, i.e.
//     relative error <= 2 eps32;
//   * |r - exact| <= 2 eps32 |b cos| + (2 eps32 + u) |a sin| + u |r| <= 3 eps32 * mag, using
//     |r| ~ |b cos + a sin| <= mag (the final fp32 rounding of the fma is u |r| <= ulp32(r) / 2);
//   * the reference rounds the double result to fp32 (<= eps32/2 * mag) and then to T
//     (<= ulp_T(want) / 2); the kernel rounds r to T (<= ulp_T(got) / 2, nothing extra for float).
// Sum: ulp_T(max) + 3.5 eps32 * mag; 4 eps32 leaves room for the double reference's own error.
// Real defects stay visible: a wrong sign/pair/angle is O(|x|) off, and even an angle off by one
// fp32 ulp (e.g. computed in double) is ~1e-4 |x| at positions ~2^17, far above ~5e-7 |x|.
// (Using |a cos| + |b sin| for b' too underestimated its bound and failed correct fp32 results:
// seed 3298644455, pos 49084, pair 26: cos = -0.0050, sin = 0.99999, a = 0.0625, b = 0.0061 gave
// mag 0.0064 instead of 0.0626, a 6.8e-9 tolerance for a 7.45e-9 (2 ulp) legitimate difference.)
template <typename T>
std::int64_t first_rope_mismatch(const std::vector<T>& got, const std::vector<T>& want, const std::vector<double>& mag) {
  const double eps32 = std::numeric_limits<float>::epsilon();
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = to_float(got[i]), w = to_float(want[i]);
    const double tol = ulp_of<T>(std::max(std::abs(g), std::abs(w))) + 4 * eps32 * mag[i];
    if (std::isnan(g) || std::abs(g - w) > tol) return std::int64_t(i);
  }
  return -1;
}

struct Case {
  std::int64_t batch, hq, hk, seq, head_dim, rotary_dim;
  RopeStyle style;
  bool per_batch_positions;
};

// Fills host tables the way the library defines them (for the table variant), by building them
// with rope_cache on the device.
template <typename T>
void check_case(const Case& c, bool fused, bool bnhd_layout, bool inplace) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " fused=" + std::to_string(fused) + " bnhd=" +
               std::to_string(bnhd_layout) + " inplace=" + std::to_string(inplace) + " style=" +
               std::to_string(int(c.style)) + " d=" + std::to_string(c.head_dim) + " r=" + std::to_string(c.rotary_dim));
  const std::int64_t max_pos = 1 << 17;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> pos_dist(0, max_pos);
  std::vector<std::int64_t> pos(c.batch * c.seq);
  for (auto& p : pos) p = pos_dist(rng);
  pos[0] = max_pos;
  std::vector<std::int64_t> pos_used = pos;
  if (!c.per_batch_positions)
    for (std::int64_t i = 0; i < c.batch * c.seq; ++i) pos_used[i] = pos[i % c.seq];
  const double base = 10000.0;

  RopeShape shape{c.batch, c.seq, c.head_dim, c.rotary_dim};
  std::vector<T> hq = testing::random_vector<T>(c.batch * c.hq * c.seq * c.head_dim, seed + 1);
  std::vector<T> hk = testing::random_vector<T>(c.batch * c.hk * c.seq * c.head_dim, seed + 2);
  // Device storage is [B, N, H, d] when bnhd_layout (viewed through strides), else [B, H, N, d].
  auto to_device_layout = [&](const std::vector<T>& bhnd, std::int64_t h) {
    if (!bnhd_layout) return bhnd;
    std::vector<T> out(bhnd.size());
    for (std::int64_t b = 0; b < c.batch; ++b)
      for (std::int64_t hh = 0; hh < h; ++hh)
        for (std::int64_t n = 0; n < c.seq; ++n)
          for (std::int64_t e = 0; e < c.head_dim; ++e)
            out[((b * c.seq + n) * h + hh) * c.head_dim + e] = bhnd[((b * h + hh) * c.seq + n) * c.head_dim + e];
    return out;
  };
  auto from_device_layout = [&](const std::vector<T>& dev, std::int64_t h) {
    if (!bnhd_layout) return dev;
    std::vector<T> out(dev.size());
    for (std::int64_t b = 0; b < c.batch; ++b)
      for (std::int64_t hh = 0; hh < h; ++hh)
        for (std::int64_t n = 0; n < c.seq; ++n)
          for (std::int64_t e = 0; e < c.head_dim; ++e)
            out[((b * h + hh) * c.seq + n) * c.head_dim + e] = dev[((b * c.seq + n) * h + hh) * c.head_dim + e];
    return out;
  };
  DeviceBuffer<T> dq(to_device_layout(hq, c.hq)), dk(to_device_layout(hk, c.hk));
  DeviceBuffer<T> dqo(dq.size()), dko(dk.size());
  dqo.poison();
  dko.poison();
  auto view = [&](const DeviceBuffer<T>& in, const DeviceBuffer<T>& out, std::int64_t h) {
    RopeTensor t;
    t.in = in.get();
    t.out = inplace ? in.get() : out.get();
    t.heads = h;
    const std::int64_t sb = c.seq * h * c.head_dim;
    const std::int64_t sh = bnhd_layout ? c.head_dim : c.seq * c.head_dim;
    const std::int64_t sn = bnhd_layout ? h * c.head_dim : c.head_dim;
    t.in_stride_b = t.out_stride_b = sb;
    t.in_stride_h = t.out_stride_h = sh;
    t.in_stride_n = t.out_stride_n = sn;
    return t;
  };
  std::vector<std::int64_t> pos_arg(pos.begin(), pos.begin() + (c.per_batch_positions ? c.batch * c.seq : c.seq));
  DeviceBuffer<std::int64_t> dpos(pos_arg);
  RopePositions positions{dpos.get(), true, c.per_batch_positions};
  if (fused) {
    rope_fused(view(dq, dqo, c.hq), view(dk, dko, c.hk), shape, positions, base, c.style, dtype_of<T>());
  } else {
    DeviceBuffer<float> cos((max_pos + 1) * c.rotary_dim / 2), sin((max_pos + 1) * c.rotary_dim / 2);
    rope_cache(cos.get(), sin.get(), max_pos + 1, c.rotary_dim, base, DType::kFloat32);
    rope(view(dq, dqo, c.hq), view(dk, dko, c.hk), shape, positions, cos.get(), sin.get(), max_pos + 1,
         DType::kFloat32, c.style, dtype_of<T>());
  }
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  for (int which = 0; which < 2; ++which) {
    const std::int64_t h = which == 0 ? c.hq : c.hk;
    const std::vector<T>& host_in = which == 0 ? hq : hk;
    const DeviceBuffer<T>& result = inplace ? (which == 0 ? dq : dk) : (which == 0 ? dqo : dko);
    std::vector<T> want;
    std::vector<double> mag;
    reference::rope(host_in, want, mag, c.batch, h, c.seq, c.head_dim, c.rotary_dim, pos_used, c.style, base);
    EXPECT_EQ(first_rope_mismatch(from_device_layout(result.download(), h), want, mag), -1) << (which ? "k" : "q");
  }
}

template <typename T>
class RopeTest : public ::testing::Test {};
using ElementTypes = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(RopeTest, ElementTypes);

const Case kCases[] = {
    {1, 1, 1, 1, 64, 64, RopeStyle::kNeox, false},  {2, 8, 2, 37, 128, 128, RopeStyle::kNeox, true},
    {2, 4, 4, 19, 128, 64, RopeStyle::kGptj, false}, {3, 3, 1, 9, 80, 48, RopeStyle::kNeox, true},
    {1, 2, 1, 7, 30, 18, RopeStyle::kGptj, true},    {2, 5, 3, 11, 64, 32, RopeStyle::kGptj, true},
};

TYPED_TEST(RopeTest, TableMatchesReference) {
  FK_SKIP_WITHOUT_GPU();
  for (const Case& c : kCases) check_case<TypeParam>(c, false, false, false);
}

TYPED_TEST(RopeTest, FusedMatchesReference) {
  FK_SKIP_WITHOUT_GPU();
  for (const Case& c : kCases) check_case<TypeParam>(c, true, false, false);
}

TYPED_TEST(RopeTest, StridedBnhdLayoutAndInPlace) {
  FK_SKIP_WITHOUT_GPU();
  for (const Case& c : kCases) {
    check_case<TypeParam>(c, false, true, false);
    check_case<TypeParam>(c, true, true, true);
    check_case<TypeParam>(c, false, false, true);
  }
}

TEST(RopeGpu, OutOfTablePositionGivesNaNNotAFault) {
  FK_SKIP_WITHOUT_GPU();
  const std::int64_t d = 64;
  DeviceBuffer<float> q(testing::random_vector<float>(d, 3)), k(testing::random_vector<float>(d, 4));
  DeviceBuffer<float> cos(4 * d / 2), sin(4 * d / 2);
  rope_cache(cos.get(), sin.get(), 4, d, 10000.0, DType::kFloat32);
  DeviceBuffer<std::int32_t> pos(std::vector<std::int32_t>{1 << 30});
  RopeTensor tq{q.get(), q.get(), 1, d, d, d, d, d, d}, tk{k.get(), k.get(), 1, d, d, d, d, d, d};
  rope(tq, tk, RopeShape{1, 1, d, d}, RopePositions{pos.get(), false, false}, cos.get(), sin.get(), 4,
       DType::kFloat32, RopeStyle::kNeox, DType::kFloat32);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  for (float v : q.download()) EXPECT_TRUE(std::isnan(v));
}

// Argument validation happens before any CUDA call, so these run without a GPU.
std::string argument_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ArgumentError& e) {
    return e.argument();
  }
  return "<no error>";
}

TEST(RopeArguments, NameTheArgument) {
  float dummy[4] = {};
  RopeTensor t{dummy, dummy, 1, 64, 64, 64, 64, 64, 64};
  RopePositions none{};
  EXPECT_EQ(argument_of([&] { rope_fused(t, t, RopeShape{1, 1, 64, 7}, none, 1e4, RopeStyle::kNeox, DType::kFloat32); }),
            "rotary_dim");
  EXPECT_EQ(argument_of([&] { rope_fused(t, t, RopeShape{1, 1, 64, 66}, none, 1e4, RopeStyle::kNeox, DType::kFloat32); }),
            "rotary_dim");
  EXPECT_EQ(argument_of([&] { rope_fused(t, t, RopeShape{1, 1, 64, 64}, none, -1.0, RopeStyle::kNeox, DType::kFloat32); }),
            "base");
  EXPECT_EQ(argument_of([&] { rope_fused(t, t, RopeShape{1, 1, 64, 64}, none, 1e4, RopeStyle(7), DType::kFloat32); }),
            "style");
  RopeTensor null_q = t;
  null_q.in = nullptr;
  EXPECT_EQ(argument_of([&] { rope_fused(null_q, t, RopeShape{1, 1, 64, 64}, none, 1e4, RopeStyle::kNeox, DType::kFloat32); }),
            "q");
  EXPECT_EQ(argument_of([&] {
              rope(t, t, RopeShape{1, 8, 64, 64}, none, dummy, dummy, 4, DType::kFloat32, RopeStyle::kNeox,
                   DType::kFloat32);
            }),
            "cos");  // seq 8 > 4 table rows
  EXPECT_EQ(argument_of([&] {
              rope(t, t, RopeShape{1, 1, 64, 64}, none, dummy, dummy, 4, DType::kBFloat16, RopeStyle::kNeox,
                   DType::kFloat16);
            }),
            "cos");  // table dtype neither float32 nor q's
  EXPECT_EQ(argument_of([&] { rope_cache(dummy, dummy, 4, 5, 1e4, DType::kFloat32); }), "rotary_dim");
  EXPECT_EQ(argument_of([&] { rope_cache(dummy, dummy, -1, 8, 1e4, DType::kFloat32); }), "max_positions");
}

TEST(ReferenceRope, RotatesAPairByItsAngle) {
  // Position 1, pair 0: inv_freq = 1, so (1, 0) -> (cos 1, sin 1).
  std::vector<float> x = {1.f, 0.f}, out;
  std::vector<double> mag;
  reference::rope(x, out, mag, 1, 1, 1, 2, 2, {1}, RopeStyle::kGptj, 10000.0);
  EXPECT_FLOAT_EQ(out[0], static_cast<float>(std::cos(1.0)));
  EXPECT_FLOAT_EQ(out[1], static_cast<float>(std::sin(1.0)));
}

}  // namespace
}  // namespace flashkernel
