// flash_attention against its double-precision CPU reference: both dtypes, every head_dim, odd
// lengths, Nq != Nk both ways with the causal mask, sliding windows, softcap, GQA/MQA,
// [B, N, H, d] strides, LSE, NaN-poisoned outputs, varlen batches, and argument errors (those
// run without a GPU).
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
  AttentionOptions opt{};
};

std::string describe(const Case& c) {
  return "B=" + std::to_string(c.batch) + " Hq=" + std::to_string(c.heads_q) + " Hkv=" + std::to_string(c.heads_kv) +
         " Nq=" + std::to_string(c.seq_q) + " Nk=" + std::to_string(c.seq_k) + " d=" + std::to_string(c.head_dim) +
         " causal=" + std::to_string(c.causal) + " bnhd=" + std::to_string(c.bnhd) +
         " window=(" + std::to_string(c.opt.window_left) + "," + std::to_string(c.opt.window_right) +
         ") softcap=" + std::to_string(c.opt.softcap);
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
                  std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16, c.causal, float(scale), c.opt,
                  nullptr, backend);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> want, want_lse;
  reference::flash_attention(hq.data(), hk.data(), hv.data(), s, c.causal, scale, want, want_lse, c.opt);
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

TYPED_TEST(AttentionTest, EveryHeadDim) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {32, 80, 96, 256})
    for (std::int64_t n : {1, 7, 127, 300})
      for (bool causal : {false, true}) check_attention<TypeParam>({1, 2, 1, n, n, d, causal, n == 127});
  check_attention<TypeParam>({2, 4, 2, 70, 200, 256, true, false});
  // head_dim 256's Hopper tiles are 64 keys in a 2-stage ring: many refills of both stages.
  for (bool causal : {false, true}) check_attention<TypeParam>({1, 2, 1, 1100, 1037, 256, causal, false});
  check_attention<TypeParam>({1, 2, 2, 200, 70, 96, true, true});
  check_attention<TypeParam>({2, 6, 2, 333, 333, 80, false, false});
  // The padded head dims' Hopper tiles (32 in 64-wide rows, 80 and 96 in 128-wide ones) over
  // several key tiles and ring turns, O through shared memory (80, 96) and from registers (32).
  for (std::int64_t d : {32, 80, 96}) check_attention<TypeParam>({1, 3, 1, 777, 1030, d, true, d == 80});
}

// Sliding windows on both sides, alone and with causal, windows longer than the sequence, left 0
// (each row sees only its own position), Nq != Nk (the window follows the bottom-right
// alignment), every head dim's tile shape.
TYPED_TEST(AttentionTest, SlidingWindow) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {64, 128, 32, 96, 256}) {
    const std::pair<std::int64_t, std::int64_t> windows[] = {{16, -1}, {-1, 5}, {100, 40}, {0, 0}, {300, -1}, {2000, 2000}};
    for (auto [left, right] : windows) {
      AttentionOptions o;
      o.window_left = left, o.window_right = right;
      check_attention<TypeParam>({1, 2, 1, 300, 300, d, false, false, o});
      check_attention<TypeParam>({1, 2, 2, 129, 129, d, true, false, o});
    }
    AttentionOptions o;
    o.window_left = 64;
    check_attention<TypeParam>({1, 2, 1, 70, 500, d, true, true, o});
    check_attention<TypeParam>({1, 2, 1, 500, 70, d, false, false, o});  // early rows see no key
  }
  AttentionOptions o;
  o.window_left = 200, o.window_right = 0;
  check_attention<TypeParam>({1, 2, 2, 1000, 1000, 128, false, false, o});  // many skipped tiles
}

TYPED_TEST(AttentionTest, Softcap) {
  FK_SKIP_WITHOUT_GPU();
  for (std::int64_t d : {64, 96, 128, 256})
    for (float cap : {1.f, 30.f}) {
      AttentionOptions o;
      o.softcap = cap;
      check_attention<TypeParam>({1, 2, 1, 127, 127, d, true, false, o});
      check_attention<TypeParam>({2, 4, 2, 64, 300, d, false, true, o});
      o.window_left = 50;
      check_attention<TypeParam>({1, 2, 2, 300, 300, d, true, false, o});
    }
}

// Compares a packed batch's output [total_q, hq, d] and lse [hq, total_q] with the reference of
// each sequence, computed from the host arrays q [total_q, hq, d] and k/v (sequence b's keys at
// rows cu_k[b] .. of [*, hkv, d]).
template <typename T>
void expect_packed_batch_matches(const std::vector<T>& got, const std::vector<float>& got_lse, const std::vector<T>& hq_,
                                 const std::vector<T>& hk_, const std::vector<T>& hv_,
                                 const std::vector<std::int64_t>& lens_q, const std::vector<std::int64_t>& lens_k,
                                 const std::vector<std::int32_t>& cu_q, const std::vector<std::int32_t>& cu_k,
                                 std::int64_t hq, std::int64_t hkv, std::int64_t d, std::int64_t total_q, bool causal,
                                 double scale, const AttentionOptions& opt) {
  double worst = 0, worst_lse = 0;
  for (std::size_t b = 0; b < lens_q.size(); ++b) {
    if (lens_q[b] == 0) continue;
    // This sequence as a dense batch of one, read in place from the packed host arrays.
    AttentionShape one;
    one.batch = 1, one.heads_q = hq, one.heads_kv = hkv, one.seq_q = lens_q[b], one.seq_k = lens_k[b], one.head_dim = d;
    set_strides(one.q_stride, hq, lens_q[b], d, true);
    set_strides(one.k_stride, hkv, lens_k[b], d, true);
    set_strides(one.v_stride, hkv, lens_k[b], d, true);
    std::vector<double> want, want_lse;
    reference::flash_attention(hq_.data() + cu_q[b] * hq * d, hk_.data() + cu_k[b] * hkv * d,
                               hv_.data() + cu_k[b] * hkv * d, one, causal, scale, want, want_lse, opt);
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t i = 0; i < lens_q[b]; ++i) {
        const std::int64_t row = cu_q[b] + i;
        for (std::int64_t e = 0; e < d; ++e) {
          const double g = to_float(got[(row * hq + h) * d + e]);
          ASSERT_FALSE(std::isnan(g)) << "out NaN at seq " << b << " h=" << h << " i=" << i;
          worst = std::max(worst, std::abs(g - want[(h * lens_q[b] + i) * d + e]));
        }
        const double gl = got_lse[h * total_q + row], wl = want_lse[h * lens_q[b] + i];
        if (std::isinf(wl)) {
          ASSERT_TRUE(std::isinf(gl) && gl < 0) << "seq " << b << " row " << i << ": lse must be -inf, got " << gl;
        } else {
          worst_lse = std::max(worst_lse, std::abs(gl - wl));
        }
      }
  }
  EXPECT_LE(worst, tolerance<T>());
  EXPECT_LE(worst_lse, 1e-3);
}

// Varlen: sequences of lengths 0, 1, 7, 127, ... packed in one [total, H, d] tensor, each checked
// against the dense reference of its own rows; rows of q past the last sequence stay untouched.
// nan_tail_k: k and v get that many more rows after the last sequence, all NaN (unwritten memory
// a caller may leave there): a key tile reaching into them must not turn any output NaN.
template <typename T>
void check_varlen(const std::vector<std::int64_t>& lens_q, const std::vector<std::int64_t>& lens_k, std::int64_t hq,
                  std::int64_t hkv, std::int64_t d, bool causal, AttentionOptions opt = {},
                  AttentionBackend backend = AttentionBackend::kAuto, std::int64_t nan_tail_k = 0) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("varlen d=" + std::to_string(d) + " causal=" + std::to_string(causal) + " window=(" +
               std::to_string(opt.window_left) + "," + std::to_string(opt.window_right) + ") softcap=" +
               std::to_string(opt.softcap) + " backend=" + std::to_string(int(backend)) + " nan_tail_k=" +
               std::to_string(nan_tail_k) + " seed=" + std::to_string(seed));
  const std::size_t B = lens_q.size();
  std::vector<std::int32_t> cu_q{0}, cu_k{0};
  std::int64_t max_q = 0, max_k = 0;
  for (std::size_t b = 0; b < B; ++b) {
    cu_q.push_back(cu_q.back() + std::int32_t(lens_q[b]));
    cu_k.push_back(cu_k.back() + std::int32_t(lens_k[b]));
    max_q = std::max(max_q, lens_q[b]);
    max_k = std::max(max_k, lens_k[b]);
  }
  const std::int64_t total_q = cu_q.back(), total_k = cu_k.back() + nan_tail_k;
  auto hq_ = testing::random_vector<T>(std::max<std::int64_t>(1, total_q * hq * d), seed, -2.f, 2.f);
  auto hk_ = testing::random_vector<T>(std::max<std::int64_t>(1, total_k * hkv * d), seed + 1, -2.f, 2.f);
  auto hv_ = testing::random_vector<T>(std::max<std::int64_t>(1, total_k * hkv * d), seed + 2);
  for (std::int64_t i = cu_k.back() * hkv * d; i < total_k * hkv * d; ++i) {
    hk_[i] = from_float<T>(std::nanf(""));
    hv_[i] = from_float<T>(std::nanf(""));
  }
  DeviceBuffer<T> dq(hq_), dk(hk_), dv(hv_), dout(std::max<std::int64_t>(1, total_q * hq * d));
  DeviceBuffer<float> dlse(std::max<std::int64_t>(1, hq * total_q));
  DeviceBuffer<std::int32_t> dcq(cu_q), dck(cu_k);
  dout.poison();
  dlse.poison();
  AttentionVarlenShape s;
  s.batch = std::int64_t(B), s.heads_q = hq, s.heads_kv = hkv, s.head_dim = d, s.total_q = total_q,
  s.total_k = total_k, s.max_seq_q = max_q, s.max_seq_k = max_k;
  s.cu_seqlens_q = dcq.get(), s.cu_seqlens_k = dck.get();
  s.q_stride[0] = s.o_stride[0] = hq * d, s.q_stride[1] = s.o_stride[1] = d;
  s.k_stride[0] = s.v_stride[0] = hkv * d, s.k_stride[1] = s.v_stride[1] = d;
  const double scale = 1.0 / std::sqrt(double(d));
  flash_attention_varlen(dq.get(), dk.get(), dv.get(), dout.get(), dlse.get(), s,
                         std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16, causal, float(scale), opt,
                         nullptr, backend);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  expect_packed_batch_matches<T>(dout.download(), dlse.download(), hq_, hk_, hv_, lens_q, lens_k, cu_q, cu_k, hq, hkv,
                                  d, total_q, causal, scale, opt);
}

TYPED_TEST(AttentionTest, VarlenPackedBatch) {
  FK_SKIP_WITHOUT_GPU();
  const std::vector<std::int64_t> lq{7, 0, 1, 127, 300, 64}, lk{7, 5, 1, 127, 300, 200};
  for (std::int64_t d : {64, 128, 80, 256})
    for (bool causal : {false, true}) check_varlen<TypeParam>(lq, lk, 4, 2, d, causal);
  AttentionOptions o;
  o.window_left = 32;
  o.softcap = 20.f;
  check_varlen<TypeParam>(lq, lk, 2, 1, 64, true, o);
  check_varlen<TypeParam>({1000}, {1000}, 2, 2, 128, true, o);
}

// The Hopper path (kSm90, every head_dim on a 9.x GPU) and the portable one on the same
// batches, with NaN rows after the last sequence's keys that a tail tile reads.
TYPED_TEST(AttentionTest, VarlenHopperPath) {
  FK_SKIP_WITHOUT_GPU();
  const std::vector<std::int64_t> lq{7, 0, 1, 127, 300, 64, 129}, lk{7, 5, 1, 127, 300, 200, 1};
  for (std::int64_t d : {32, 64, 80, 96, 128, 256})
    for (bool causal : {false, true}) {
      check_varlen<TypeParam>(lq, lk, 4, 2, d, causal, {}, AttentionBackend::kSm80, 3);
      if (detail::current_compute_major() != 9) continue;
      check_varlen<TypeParam>(lq, lk, 4, 2, d, causal, {}, AttentionBackend::kSm90, 3);
      check_varlen<TypeParam>({1, 255, 1000}, {300, 1000, 2000}, 8, 1, d, causal, {}, AttentionBackend::kSm90, 60);
      // Windows (key tiles skipped on both sides, a sequence's first tile masked on the left) and
      // softcap on the same path.
      AttentionOptions o;
      o.window_left = 100, o.softcap = 20.f;
      check_varlen<TypeParam>(lq, lk, 4, 2, d, causal, o, AttentionBackend::kSm90, 3);
      o = {};
      o.window_left = 150, o.window_right = 70;
      check_varlen<TypeParam>({1, 255, 1000}, {300, 1000, 2000}, 8, 1, d, causal, o, AttentionBackend::kSm90, 60);
    }
}

// Prefill over a paged cache on the Hopper kernel (paged_prefill_attention): each sequence's keys
// written into layer 1 of a NaN-filled pool at shuffled pages, its new tokens the last lens_q of
// them; checked as the packed batch of the same keys on contiguous memory. NaN in the unused
// slots of a sequence's last page (and in every other page) must not reach the output.
template <typename T>
void check_paged_prefill(std::int64_t page_size, std::int64_t d, const std::vector<std::int64_t>& prefix,
                         const std::vector<std::int64_t>& lens_q, AttentionOptions opt = {}) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("paged prefill page_size=" + std::to_string(page_size) + " d=" + std::to_string(d) + " window_left=" +
               std::to_string(opt.window_left) + " softcap=" + std::to_string(opt.softcap) + " seed=" +
               std::to_string(seed));
  const std::int64_t hq = 8, hkv = 2, B = std::int64_t(lens_q.size());
  std::vector<std::int64_t> lens_k(B);
  std::vector<std::int32_t> cu_q{0}, cu_k{0}, seq_lens(B);
  std::int64_t max_q = 0, max_k = 0, max_pages = 1, used_pages = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    lens_k[b] = prefix[b] + lens_q[b];
    cu_q.push_back(cu_q.back() + std::int32_t(lens_q[b]));
    cu_k.push_back(cu_k.back() + std::int32_t(lens_k[b]));
    seq_lens[b] = std::int32_t(lens_k[b]);
    max_q = std::max(max_q, lens_q[b]);
    max_k = std::max(max_k, lens_k[b]);
    max_pages = std::max(max_pages, (lens_k[b] + page_size - 1) / page_size);
    used_pages += (lens_k[b] + page_size - 1) / page_size;
  }
  KVCacheLayout layout;
  layout.num_layers = 2, layout.num_pages = used_pages + 3, layout.page_size = page_size, layout.num_kv_heads = hkv;
  layout.head_dim = d, layout.dtype = std::is_same_v<T, __half> ? DType::kFloat16 : DType::kBFloat16;
  // Pages handed out in a shuffled order; table entries past a sequence's pages are -1.
  std::vector<std::int32_t> order(layout.num_pages);
  for (std::int32_t i = 0; i < std::int32_t(order.size()); ++i) order[i] = i;
  std::uint64_t state = seed | 1;
  for (std::size_t i = order.size() - 1; i > 0; --i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    std::swap(order[i], order[(state >> 33) % (i + 1)]);
  }
  std::vector<std::int32_t> table(B * max_pages, -1);
  for (std::int64_t b = 0, next = 0; b < B; ++b)
    for (std::int64_t i = 0; i < (lens_k[b] + page_size - 1) / page_size; ++i) table[b * max_pages + i] = order[next++];
  const std::int64_t total_q = cu_q.back(), total_k = cu_k.back();
  auto hq_ = testing::random_vector<T>(std::max<std::int64_t>(1, total_q * hq * d), seed, -2.f, 2.f);
  auto hk_ = testing::random_vector<T>(std::max<std::int64_t>(1, total_k * hkv * d), seed + 1, -2.f, 2.f);
  auto hv_ = testing::random_vector<T>(std::max<std::int64_t>(1, total_k * hkv * d), seed + 2);
  std::vector<T> pool(layout.total_elems(), from_float<T>(std::nanf("")));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < lens_k[b]; ++t)
      for (std::int64_t h = 0; h < hkv; ++h)
        for (int kv = 0; kv < 2; ++kv) {
          const std::int64_t page = table[b * max_pages + t / page_size];
          const std::int64_t dst = ((((layout.num_pages + page) * 2 + kv) * hkv + h) * page_size + t % page_size) * d;
          const std::int64_t src = ((cu_k[b] + t) * hkv + h) * d;
          std::copy_n((kv == 0 ? hk_ : hv_).begin() + src, d, pool.begin() + dst);
        }
  DeviceBuffer<T> dq(hq_), dpool(pool), dout(std::max<std::int64_t>(1, total_q * hq * d));
  DeviceBuffer<float> dlse(std::max<std::int64_t>(1, hq * total_q));
  DeviceBuffer<std::int32_t> dtable(table), dlens(seq_lens), dcq(cu_q);
  dout.poison();
  dlse.poison();
  PagedPrefillArgs a;
  a.q = dq.get(), a.out = dout.get(), a.lse = dlse.get(), a.pool = dpool.get(), a.layout = layout, a.layer = 1;
  a.page_table = dtable.get(), a.max_pages = max_pages, a.seq_lens = dlens.get(), a.cu_seqlens_q = dcq.get();
  a.batch = B, a.heads_q = hq, a.total_q = total_q, a.max_seq_q = max_q, a.max_seq_k = max_k;
  const double scale = 1.0 / std::sqrt(double(d));
  a.scale = float(scale);
  a.options = opt;
  ASSERT_TRUE(paged_prefill_attention(a, nullptr)) << "the Hopper paged kernel did not run";
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  expect_packed_batch_matches<T>(dout.download(), dlse.download(), hq_, hk_, hv_, lens_q, lens_k, cu_q, cu_k, hq, hkv,
                                  d, total_q, /*causal=*/true, scale, opt);
}

TYPED_TEST(AttentionTest, PagedPrefillHopper) {
  FK_SKIP_WITHOUT_GPU();
  if (detail::current_compute_major() != 9) GTEST_SKIP() << "the paged kernel needs a compute capability 9.x GPU";
  for (std::int64_t page : {8, 16, 64, 128, 256})
    for (std::int64_t d : {64, 128}) {
      const std::vector<std::int64_t> prefix{page - 1, page, page + 1, 3 * page + 5, 0, 700, 1000, 0};
      const std::vector<std::int64_t> lens_q{1, 3, 129, 200, 300, 64, 1, 0};
      check_paged_prefill<TypeParam>(page, d, prefix, lens_q);
      AttentionOptions o;
      o.window_left = 150, o.softcap = 20.f;
      check_paged_prefill<TypeParam>(page, d, prefix, lens_q, o);
    }
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
  s.head_dim = 72;
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

TEST(AttentionArguments, WindowSoftcapAndVarlenNameTheirArguments) {
  alignas(16) static char buf[64];
  AttentionOptions o;
  o.softcap = -1.f;
  auto argument = [&](auto&& call) {
    try {
      call();
    } catch (const ArgumentError& e) {
      return e.argument();
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(argument([&] { flash_attention(buf, buf, buf, buf, nullptr, valid_shape(), DType::kFloat16, false, 1.f, o); }),
            "softcap");
  o.softcap = 0.f;
  o.window_left = -2;  // -1 is unbounded; below it is a mistake
  EXPECT_EQ(argument([&] { flash_attention(buf, buf, buf, buf, nullptr, valid_shape(), DType::kFloat16, false, 1.f, o); }),
            "window_left");
  o.window_left = 8, o.window_right = -7;
  EXPECT_EQ(argument([&] { flash_attention(buf, buf, buf, buf, nullptr, valid_shape(), DType::kFloat16, false, 1.f, o); }),
            "window_right");
  o.window_right = -1;
  // A backend that does not exist is an error, before any CUDA call.
  auto d96 = valid_shape();
  d96.head_dim = 96;
  EXPECT_EQ(argument([&] {
              flash_attention(buf, buf, buf, buf, nullptr, d96, DType::kFloat16, false, 1.f, o, nullptr,
                              static_cast<AttentionBackend>(7));
            }),
            "backend");
  AttentionVarlenShape v;
  v.batch = 2, v.heads_q = 4, v.heads_kv = 2, v.head_dim = 64, v.total_q = 16, v.total_k = 16, v.max_seq_q = 8,
  v.max_seq_k = 8;
  EXPECT_EQ(argument([&] { flash_attention_varlen(buf, buf, buf, buf, nullptr, v, DType::kFloat16, false, 1.f); }),
            "cu_seqlens_q");
  v.max_seq_k = -1;
  EXPECT_EQ(argument([&] { flash_attention_varlen(buf, buf, buf, buf, nullptr, v, DType::kFloat16, false, 1.f); }),
            "max_seq_k");
  v.max_seq_k = 8, v.head_dim = 48;
  EXPECT_EQ(argument([&] { flash_attention_varlen(buf, buf, buf, buf, nullptr, v, DType::kFloat16, false, 1.f); }),
            "head_dim");
}

TEST(AttentionArguments, PagedPrefillNamesItsArguments) {
  alignas(16) static char buf[64];
  const std::int32_t* ints = reinterpret_cast<const std::int32_t*>(buf);
  auto valid = [&] {
    PagedPrefillArgs a;
    a.q = a.pool = buf, a.out = buf, a.page_table = a.seq_lens = a.cu_seqlens_q = ints;
    a.layout.num_layers = 2, a.layout.num_pages = 8, a.layout.page_size = 16, a.layout.num_kv_heads = 2;
    a.layout.head_dim = 64;
    a.batch = 1, a.heads_q = 4, a.total_q = 4, a.max_seq_q = 4, a.max_seq_k = 20, a.max_pages = 2, a.scale = 0.125f;
    return a;
  };
  auto argument = [](const PagedPrefillArgs& a) {
    try {
      paged_prefill_attention(a);
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("paged_prefill_attention"), std::string::npos);
      return e.argument();
    }
    return std::string("(no error)");
  };
  auto a = valid();
  a.layer = 2;
  EXPECT_EQ(argument(a), "layer");
  a = valid();
  a.layout.head_dim = 96;
  EXPECT_EQ(argument(a), "layout.head_dim");
  a = valid();
  a.max_seq_k = 33;  // more than 2 pages of 16 hold
  EXPECT_EQ(argument(a), "max_seq_k");
  a = valid();
  a.heads_q = 3;
  EXPECT_EQ(argument(a), "heads_q");
  a = valid();
  a.options.window_left = 4, a.options.softcap = -1.f;
  EXPECT_EQ(argument(a), "softcap");
  a = valid();
  a.layout.dtype = DType::kFloat8E4M3;  // the kernel reads 16-bit pages only: not run, no error
  EXPECT_FALSE(paged_prefill_attention(a));
}

TEST(ReferenceAttention, WindowAndSoftcapByDefinition) {
  // One query over 4 keys with window (1, 0): it sees keys 2 and 3 only (position 3).
  AttentionShape s;
  s.batch = 1, s.heads_q = 1, s.heads_kv = 1, s.seq_q = 1, s.seq_k = 4, s.head_dim = 1;
  s.q_stride[2] = s.k_stride[2] = s.v_stride[2] = 1;
  const float q[1] = {1.f}, k[4] = {5.f, 5.f, 1.f, 2.f}, v[4] = {100.f, 100.f, 1.f, 3.f};
  AttentionOptions o;
  o.window_left = 1, o.window_right = 0, o.softcap = 1.f;
  std::vector<double> out, lse;
  reference::flash_attention(q, k, v, s, false, 1.0, out, lse, o);
  const double s2 = std::tanh(1.0), s3 = std::tanh(2.0);
  const double p2 = std::exp(s2), p3 = std::exp(s3);
  EXPECT_NEAR(out[0], (p2 * 1.0 + p3 * 3.0) / (p2 + p3), 1e-12);
  EXPECT_NEAR(lse[0], std::log(p2 + p3), 1e-12);
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
