// flash_attention against its double-precision CPU reference: both dtypes and head_dims, odd
// lengths, Nq != Nk both ways with the causal mask, GQA/MQA, [B, N, H, d] strides, LSE, NaN-
// poisoned outputs, and argument errors (those run without a GPU).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/launch.h"
#include "flashkernel/attention.h"
#include "flashkernel/status.h"
#include "reference/attention_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

struct Case {
  std::int64_t batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
  bool causal;
  bool bnhd;  // q/k/v/out stored [B, N, H, d] (the transposed view of [B, H, N, d])
};

std::string describe(const Case& c) {
  return "B=" + std::to_string(c.batch) + " Hq=" + std::to_string(c.heads_q) + " Hkv=" + std::to_string(c.heads_kv) +
         " Nq=" + std::to_string(c.seq_q) + " Nk=" + std::to_string(c.seq_k) + " d=" + std::to_string(c.head_dim) +
         " causal=" + std::to_string(c.causal) + " bnhd=" + std::to_string(c.bnhd);
}

void set_strides(std::int64_t (&st)[3], std::int64_t heads, std::int64_t seq, std::int64_t d, bool bnhd) {
  if (bnhd) {
    st[0] = seq * heads * d, st[1] = d, st[2] = heads * d;
  } else {
    st[0] = heads * seq * d, st[1] = seq * d, st[2] = d;
  }
}

// Max abs error allowed against the exact result: P is rounded to T before the PV product and the
// output is rounded to T, each a relative error of one T rounding on values bounded by max|v| = 1.
template <typename T>
double tolerance() {
  return 4 * testing::rounding_tolerance<T>();
}

// The kernel paths this GPU runs as the library dispatches it (the built architecture, or
// FLASHKERNEL_FORCE_ARCH): the portable one always, the Hopper one on compute 9.x.
std::vector<AttentionBackend> backends_to_test() {
  if (detail::current_compute_major() == 9) return {AttentionBackend::kSm80, AttentionBackend::kSm90};
  return {AttentionBackend::kSm80};
}

const char* backend_name(AttentionBackend b) { return b == AttentionBackend::kSm90 ? "sm90" : "sm80"; }

template <typename T>
void check_attention_on(const Case& c, AttentionBackend backend);

// Runs the case on every kernel path this GPU has.
template <typename T>
void check_attention(const Case& c) {
  for (AttentionBackend b : backends_to_test()) check_attention_on<T>(c, b);
}

template <typename T>
void check_attention_on(const Case& c, AttentionBackend backend) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE(describe(c) + " backend=" + backend_name(backend) + " seed=" + std::to_string(seed));
  AttentionShape s;
  s.batch = c.batch, s.heads_q = c.heads_q, s.heads_kv = c.heads_kv, s.seq_q = c.seq_q, s.seq_k = c.seq_k,
  s.head_dim = c.head_dim;
  set_strides(s.q_stride, c.heads_q, c.seq_q, c.head_dim, c.bnhd);
  set_strides(s.k_stride, c.heads_kv, c.seq_k, c.head_dim, c.bnhd);
  set_strides(s.v_stride, c.heads_kv, c.seq_k, c.head_dim, c.bnhd);
  set_strides(s.o_stride, c.heads_q, c.seq_q, c.head_dim, c.bnhd);
  const std::int64_t nq = c.batch * c.heads_q * c.seq_q * c.head_dim;
  const std::int64_t nk = c.batch * c.heads_kv * c.seq_k * c.head_dim;
  auto hq = testing::random_vector<T>(nq, seed, -2.f, 2.f);
  auto hk = testing::random_vector<T>(nk, seed + 1, -2.f, 2.f);
  auto hv = testing::random_vector<T>(nk, seed + 2);
  DeviceBuffer<T> dq(hq), dk(hk), dv(hv), dout(nq);
  DeviceBuffer<float> dlse(c.batch * c.heads_q * c.seq_q);
  dout.poison();
  dlse.poison();
  const double scale = 1.0 / std::sqrt(double(c.head_dim));
  flash_attention(dq.get(), dk.get(), dv.get(), dout.get(), dlse.get(), s,
                  std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16, c.causal, float(scale), nullptr,
                  backend);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> want, want_lse;
  reference::flash_attention(hq.data(), hk.data(), hv.data(), s, c.causal, scale, want, want_lse);
  auto got = dout.download();
  auto got_lse = dlse.download();
  double worst = 0, worst_lse = 0;
  for (std::int64_t b = 0; b < c.batch; ++b)
    for (std::int64_t h = 0; h < c.heads_q; ++h)
      for (std::int64_t i = 0; i < c.seq_q; ++i) {
        const std::int64_t row = (b * c.heads_q + h) * c.seq_q + i;
        for (std::int64_t d = 0; d < c.head_dim; ++d) {
          const double g = to_float(got[b * s.o_stride[0] + h * s.o_stride[1] + i * s.o_stride[2] + d]);
          ASSERT_FALSE(std::isnan(g)) << "out NaN at b=" << b << " h=" << h << " i=" << i << " d=" << d;
          worst = std::max(worst, std::abs(g - want[row * c.head_dim + d]));
        }
        const double gl = got_lse[row], wl = want_lse[row];
        if (std::isinf(wl)) {
          ASSERT_TRUE(std::isinf(gl) && gl < 0) << "row " << i << " sees no key: lse must be -inf, got " << gl;
        } else {
          ASSERT_TRUE(std::isfinite(gl)) << "lse not finite at row " << i;
          worst_lse = std::max(worst_lse, std::abs(gl - wl));
        }
      }
  EXPECT_LE(worst, tolerance<T>());
  EXPECT_LE(worst_lse, 1e-3);  // fp32 statistics of scores of magnitude <= ~8
}

FK_DTYPE_TEST_SUITE(AttentionTest, testing::HalfDtypes);

TYPED_TEST(AttentionTest, OddLengthsBothHeadDims) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {64, 128})
    for (std::int64_t n : {1, 7, 127, 129, 300})
      for (bool causal : {false, true}) check_attention<TypeParam>({1, 2, 2, n, n, d, causal, false});
}

TYPED_TEST(AttentionTest, UnequalLengthsCausalBottomRight) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {64, 128}) {
    check_attention<TypeParam>({1, 2, 2, 70, 200, d, true, false});
    check_attention<TypeParam>({1, 2, 2, 200, 70, d, true, false});  // first 130 rows see no key
    check_attention<TypeParam>({2, 1, 1, 1, 333, d, true, false});
    check_attention<TypeParam>({1, 1, 1, 150, 1, d, false, false});
  }
}

TYPED_TEST(AttentionTest, GroupedQueryHeadsAndStrides) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {64, 128}) {
    check_attention<TypeParam>({2, 8, 2, 130, 130, d, true, true});
    check_attention<TypeParam>({1, 8, 1, 65, 190, d, false, true});
    check_attention<TypeParam>({2, 4, 4, 257, 257, d, false, true});
  }
}

// Long enough for every stage of the K/V rings to be refilled several times (sm90: 128-key tiles,
// 2-3 stages), with a causal diagonal that crosses tiles unaligned.
TYPED_TEST(AttentionTest, ManyKeyTilesThroughThePipeline) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {64, 128}) {
    check_attention<TypeParam>({1, 2, 1, 1000, 1000, d, true, false});
    check_attention<TypeParam>({1, 1, 1, 333, 1201, d, false, true});
  }
}

// More (query block, head, batch) work tiles than any GPU has SMs: the persistent sm90 kernel's
// blocks each run several tiles, carrying the K/V ring and the Q barriers from one to the next
// (tiles with and without visible keys mixed in by the causal Nq > Nk case).
TYPED_TEST(AttentionTest, MoreWorkTilesThanSms) {
  FK_SKIP_WITHOUT_GPU();
  check_attention<TypeParam>({2, 40, 8, 130, 200, 64, true, false});
  check_attention<TypeParam>({3, 24, 24, 300, 170, 128, true, true});
}

TEST(AttentionGpu, EmptyQueryIsANoOp) {
  FK_SKIP_WITHOUT_GPU();
  AttentionShape s;
  s.batch = 1, s.heads_q = 1, s.heads_kv = 1, s.seq_q = 0, s.seq_k = 5, s.head_dim = 64;
  EXPECT_NO_THROW(flash_attention(nullptr, nullptr, nullptr, nullptr, nullptr, s, DType::kFloat16, false, 1.f));
}

// Argument validation happens before any CUDA call, so these run without a GPU.
AttentionShape valid_shape() {
  AttentionShape s;
  s.batch = 1, s.heads_q = 4, s.heads_kv = 2, s.seq_q = 16, s.seq_k = 16, s.head_dim = 64;
  set_strides(s.q_stride, 4, 16, 64, false);
  set_strides(s.k_stride, 2, 16, 64, false);
  set_strides(s.v_stride, 2, 16, 64, false);
  set_strides(s.o_stride, 4, 16, 64, false);
  return s;
}

std::string argument_of_error(const AttentionShape& s, DType dtype, const void* ptr = nullptr,
                              AttentionBackend backend = AttentionBackend::kAuto) {
  alignas(16) static char dummy[16];
  const void* p = ptr ? ptr : dummy;
  try {
    flash_attention(p, p, p, const_cast<void*>(p), nullptr, s, dtype, false, 1.f, nullptr, backend);
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("flash_attention"), std::string::npos);
    return e.argument();
  }
  return "(no error)";
}

TEST(AttentionArguments, EachBadInputNamesItsArgument) {
  EXPECT_EQ(argument_of_error(valid_shape(), DType::kFloat32), "dtype");
  auto s = valid_shape();
  s.head_dim = 80;
  EXPECT_EQ(argument_of_error(s, DType::kFloat16), "head_dim");
  s = valid_shape();
  s.heads_q = 3;
  EXPECT_EQ(argument_of_error(s, DType::kFloat16), "heads_q");
  s = valid_shape();
  s.seq_k = -1;
  EXPECT_EQ(argument_of_error(s, DType::kBFloat16), "seq_k");
  s = valid_shape();
  s.k_stride[2] = 60;
  EXPECT_EQ(argument_of_error(s, DType::kFloat16), "k");
  alignas(16) static char buf[32];
  EXPECT_EQ(argument_of_error(valid_shape(), DType::kFloat16, buf + 2), "q");
  EXPECT_EQ(argument_of_error(valid_shape(), DType::kFloat16, nullptr, static_cast<AttentionBackend>(7)), "backend");
}

// lse is written as fp32 scalars: a pointer off 4-byte alignment would fault on the device.
TEST(AttentionArguments, MisalignedLseNamesIt) {
  alignas(16) static char buf[64];
  try {
    flash_attention(buf, buf, buf, buf, reinterpret_cast<float*>(buf + 2), valid_shape(), DType::kFloat16, false, 1.f);
    ADD_FAILURE() << "expected ArgumentError naming lse";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "lse");
  }
}


TEST(ReferenceAttention, FullyMaskedRowIsZeroWithMinusInfLse) {
  // Nq = 3, Nk = 1, causal: rows 0 and 1 see no key, row 2 sees key 0 (weight 1: out = v[0]).
  AttentionShape s;
  s.batch = 1, s.heads_q = 1, s.heads_kv = 1, s.seq_q = 3, s.seq_k = 1, s.head_dim = 64;
  set_strides(s.q_stride, 1, 3, 64, false);
  set_strides(s.k_stride, 1, 1, 64, false);
  set_strides(s.v_stride, 1, 1, 64, false);
  auto q = testing::random_vector<float>(3 * 64, 1), k = testing::random_vector<float>(64, 2),
       v = testing::random_vector<float>(64, 3);
  std::vector<double> out, lse;
  reference::flash_attention(q.data(), k.data(), v.data(), s, true, 0.125, out, lse);
  EXPECT_TRUE(std::isinf(lse[0]) && lse[0] < 0);
  EXPECT_EQ(out[64], 0.0);
  EXPECT_DOUBLE_EQ(out[2 * 64 + 5], double(v[5]));
}

}  // namespace
}  // namespace flashkernel
