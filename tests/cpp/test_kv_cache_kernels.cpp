// Paged KV cache kernels from C++: append + gather round trip through allocator plans (with a
// copy-on-write), decode attention against the double-precision CPU reference, argument errors;
// the same for an FP8 (e4m3) pool against a host quantization reference, and its error against
// the 16-bit pool.
#include <gtest/gtest.h>

#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <functional>
#include <string>
#include <vector>

#include "common/launch.h"
#include "flashkernel/kv_cache.h"
#include "flashkernel/layernorm.h"
#include "flashkernel/reduce.h"
#include "flashkernel/vector_add.h"
#include "reference/kv_cache_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

FK_DTYPE_TEST_SUITE(KVCacheKernelTest, testing::HalfDtypes);

// Appends `n` tokens to one sequence of `layer`; returns the host K and V written ([n, H, d]).
// P: the pool's element type (T, or std::uint8_t for an FP8 pool with `scales`); values in
// [-range, range).
template <typename P, typename T = P>
std::pair<std::vector<T>, std::vector<T>> append_tokens(KVPageAllocator& alloc, DeviceBuffer<P>& pool,
                                                        const KVCacheLayout& l, std::int64_t layer, std::int64_t seq,
                                                        std::int64_t n, std::uint64_t seed, KVScales scales = {},
                                                        float range = 1.f) {
  AppendPlan plan = alloc.plan_append(layer, {seq}, {n});
  if (!plan.copies.empty()) {
    std::vector<std::int32_t> src, dst;
    for (auto c : plan.copies) src.push_back(c.src), dst.push_back(c.dst);
    DeviceBuffer<std::int32_t> dsrc(src), ddst(dst);
    kv_cache_copy_pages(pool.get(), l, dsrc.get(), ddst.get(), std::int64_t(src.size()));
    FK_CUDA_CHECK(cudaDeviceSynchronize());
  }
  auto k = testing::random_vector<T>(n * l.num_kv_heads * l.head_dim, seed, -range, range);
  auto v = testing::random_vector<T>(n * l.num_kv_heads * l.head_dim, seed + 1, -range, range);
  DeviceBuffer<T> dk(k), dv(v);
  DeviceBuffer<std::int64_t> slots(plan.slots);
  kv_cache_append(pool.get(), l, layer, slots.get(), n, dk.get(), dv.get(), nullptr, nullptr, scales);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  return {k, v};
}

template <typename T>
void expect_gather_equals(const DeviceBuffer<T>& pool, const KVCacheLayout& l, const KVPageAllocator& alloc,
                          std::int64_t layer, std::int64_t seq, const std::vector<T>& k, const std::vector<T>& v) {
  const std::int64_t n = alloc.length(seq, layer), h = l.num_kv_heads, d = l.head_dim;
  DeviceBuffer<std::int32_t> pages(alloc.pages(seq));
  DeviceBuffer<T> ko(h * n * d), vo(h * n * d);
  ko.poison();
  vo.poison();
  kv_cache_gather(pool.get(), l, layer, pages.get(), n, ko.get(), vo.get());
  auto gk = ko.download(), gv = vo.download();
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t hh = 0; hh < h; ++hh)
      for (std::int64_t c = 0; c < d; ++c) {
        const auto want = (t * h + hh) * d + c, got = (hh * n + t) * d + c;
        ASSERT_EQ(to_float(gk[got]), to_float(k[want])) << "K t=" << t << " h=" << hh << " c=" << c;
        ASSERT_EQ(to_float(gv[got]), to_float(v[want])) << "V t=" << t << " h=" << hh << " c=" << c;
      }
}

TYPED_TEST(KVCacheKernelTest, AppendGatherRoundTripWithCopyOnWrite) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  KVCacheLayout l{2, 32, 16, 3, 128, dtype_of<T>()};
  KVPageAllocator alloc(l.num_pages, l.page_size, l.num_layers);
  DeviceBuffer<T> pool(l.total_elems());
  pool.poison();
  auto s = alloc.add_sequence();
  auto [k1, v1] = append_tokens(alloc, pool, l, 1, s, 37, seed);
  expect_gather_equals(pool, l, alloc, 1, s, k1, v1);
  auto f = alloc.fork(s);
  auto [k2, v2] = append_tokens(alloc, pool, l, 1, f, 4, seed + 7);  // copies the shared partial page
  auto [k3, v3] = append_tokens(alloc, pool, l, 1, s, 2, seed + 9);
  auto cat = [](std::vector<T> a, const std::vector<T>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  expect_gather_equals(pool, l, alloc, 1, f, cat(k1, k2), cat(v1, v2));
  expect_gather_equals(pool, l, alloc, 1, s, cat(k1, k3), cat(v1, v3));
}

// Every output element near the reference, and no NaN (outputs are poisoned before each run).
template <typename T>
void expect_decode_near(const std::vector<T>& got, const std::vector<double>& want, double tol, std::int64_t splits) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = to_float(got[i]);
    ASSERT_FALSE(std::isnan(g)) << "index " << i;
    ASSERT_NEAR(g, want[i], tol) << "index " << i << " splits=" << splits;
  }
}

// The scales of an FP8 test pool: distinct per (layer, head) and K/V, around amax / 448 of the
// test values (range 4), so some values saturate and a scale read for the wrong head shows.
struct Fp8TestScales {
  std::vector<float> k, v;
  DeviceBuffer<float> dk, dv;
  explicit Fp8TestScales(const KVCacheLayout& l) : k(make(l, 0)), v(make(l, 1)), dk(k), dv(v) {}
  KVScales get() const { return {dk.get(), dv.get()}; }
  static std::vector<float> make(const KVCacheLayout& l, int which) {
    std::vector<float> s(static_cast<std::size_t>(l.num_layers * l.num_kv_heads));
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = 0.008f + 0.002f * float((i + 2 * which) % 5);
    return s;
  }
};

// A layout with the pool element type P: T itself, or e4m3 bytes with T activations.
template <typename T, typename P>
KVCacheLayout test_layout(std::int64_t layers, std::int64_t pages, std::int64_t page_size, std::int64_t hkv,
                          std::int64_t d) {
  KVCacheLayout l{layers, pages, page_size, hkv, d, dtype_of<T>()};
  if constexpr (std::is_same_v<P, std::uint8_t>) {
    l.dtype = DType::kFloat8E4M3;
    l.activation_dtype = dtype_of<T>();
  }
  return l;
}

template <typename T, typename P = T>
void check_decode(std::vector<std::int32_t> lens, std::int64_t hq, std::int64_t hkv, std::int64_t d,
                  std::int64_t page_size) {
  constexpr bool kFp8 = !std::is_same_v<P, T>;
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " hq=" + std::to_string(hq) + " hkv=" + std::to_string(hkv) +
               " d=" + std::to_string(d) + " page=" + std::to_string(page_size) + (kFp8 ? " fp8" : ""));
  std::int64_t pages = 2;
  for (auto n : lens) pages += (n + page_size - 1) / page_size;
  const KVCacheLayout l = test_layout<T, P>(1, pages, page_size, hkv, d);
  KVPageAllocator alloc(l.num_pages, l.page_size, 1);
  DeviceBuffer<P> pool(l.total_elems());
  pool.poison();
  const Fp8TestScales fp8_scales(l);
  const KVScales scales = kFp8 ? fp8_scales.get() : KVScales{};
  std::vector<std::int64_t> ids;
  for (std::size_t b = 0; b < lens.size(); ++b) {
    ids.push_back(alloc.add_sequence());
    append_tokens<P, T>(alloc, pool, l, 0, ids.back(), lens[b], seed + 17 * b, scales, kFp8 ? 4.f : 1.f);
  }
  std::int64_t max_pages = 0;
  auto table = alloc.page_table(ids, &max_pages);
  const std::int64_t batch = std::int64_t(lens.size());
  auto q = testing::random_vector<T>(batch * hq * d, seed + 1000);
  DeviceBuffer<T> dq(q), dout(batch * hq * d);
  dout.poison();
  DeviceBuffer<std::int32_t> dtable(table), dlens(lens);
  PagedDecodeArgs a;
  a.q = dq.get();
  a.out = dout.get();
  a.batch = batch;
  a.num_q_heads = hq;
  a.pool = pool.get();
  a.layout = l;
  a.page_table = dtable.get();
  a.max_pages = max_pages;
  a.seq_lens = dlens.get();
  a.max_seq_len = *std::max_element(lens.begin(), lens.end());
  a.scale = float(1.0 / std::sqrt(double(d)));
  a.scales = scales;
  std::vector<double> want;
  reference::paged_decode_attention(pool.download(), l, 0, q, batch, hq, table, max_pages, lens, a.scale, want,
                                    kFp8 ? &fp8_scales.k : nullptr, kFp8 ? &fp8_scales.v : nullptr);
  double max_abs = 0;
  for (double w : want) max_abs = std::max(max_abs, std::abs(w));
  // fp32 accumulation, one final rounding: a few ulps of the output's scale.
  const double tol = 4 * testing::rounding_tolerance<T>() * std::max(max_abs, 1e-3);
  // Every loop variant on the same inputs: the automatic choice and each one by name (the tensor
  // cores from compute capability 8.0).
  // An FP8 pool: the automatic choice and the two ring depths, the variants that read FP8.
  std::vector<PagedDecodeVariant> variants{PagedDecodeVariant::kAuto, PagedDecodeVariant::kCudaCore,
                                         PagedDecodeVariant::kCudaCorePrefetch2, PagedDecodeVariant::kCudaCorePrefetch4};
  if (kFp8) {
    variants = {PagedDecodeVariant::kAuto, PagedDecodeVariant::kTensorCoreRing, PagedDecodeVariant::kTensorCoreRing2};
  } else if (detail::current_compute_major() >= 8) {
    for (auto v : {PagedDecodeVariant::kTensorCore, PagedDecodeVariant::kTensorCoreRing,
                   PagedDecodeVariant::kTensorCoreRing2}) {
      variants.push_back(v);
    }
  }
  for (const PagedDecodeVariant variant : variants) {
    SCOPED_TRACE("variant " + std::to_string(int(variant)));
    a.variant = variant;
    DeviceBuffer<char> ws(std::int64_t(paged_decode_workspace_bytes(a)));
    a.workspace = ws.get();
    a.workspace_bytes = ws.bytes();
    dout.poison();
    paged_decode_attention(a);
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    expect_decode_near(dout.download(), want, tol, paged_decode_num_splits(a));
  }
}

TYPED_TEST(KVCacheKernelTest, DecodeMatchesReference) {
  FK_SKIP_WITHOUT_GPU();
  check_decode<TypeParam>({1, 15, 16, 17}, 8, 2, 128, 16);
  check_decode<TypeParam>({4095}, 4, 4, 64, 8);
  check_decode<TypeParam>({3000, 7, 1}, 6, 2, 128, 256);
}

// Every group size a model uses (1, 2, 4, 8, 16 query heads per KV head; 3, 6 and 12 are partial
// head chunks, 32 two chunks of 16 on the tensor cores and four of 8 on the CUDA cores), both
// head dims, page sizes 8-256, mixed lengths around the page and step edges (a ring step is 16
// tokens per warp, 64 per CTA) and one long context that splits.
TYPED_TEST(KVCacheKernelTest, DecodeMatchesReferenceForEveryGroupSize) {
  FK_SKIP_WITHOUT_GPU();
  check_decode<TypeParam>({1, 63, 64, 65, 200}, 2, 1, 128, 8);
  check_decode<TypeParam>({17, 129}, 32, 8, 128, 16);
  check_decode<TypeParam>({33, 1000, 16}, 16, 8, 64, 32);
  check_decode<TypeParam>({255, 256, 257}, 8, 1, 128, 64);
  check_decode<TypeParam>({500, 3}, 16, 1, 64, 128);
  check_decode<TypeParam>({127, 1}, 12, 2, 128, 256);
  check_decode<TypeParam>({1000, 40}, 32, 2, 128, 16);
  check_decode<TypeParam>({77, 300}, 24, 2, 128, 32);
  check_decode<TypeParam>({129, 2}, 32, 1, 64, 8);
  check_decode<TypeParam>({32768}, 32, 4, 128, 16);
}

// ----------------------------------------------------------------------------- FP8 pool
// The host e4m3 reference against cuda_fp8.h's own conversion (two independent implementations):
// every code decodes and re-encodes to itself, and random floats over the whole range, ties,
// subnormals and out-of-range values encode alike (saturated to +-448, NaN to NaN).
TEST(KVCacheFp8Reference, HostE4M3MatchesCudaFp8) {
  for (int c = 0; c < 256; ++c) {
    const double x = reference::e4m3_value(std::uint8_t(c));
    if (std::isnan(x)) continue;
    if (c == 0x80) continue;  // -0 encodes back to 0x80 via signbit; checked below
    EXPECT_EQ(reference::e4m3_encode(float(x)), c) << "code " << c;
  }
  EXPECT_EQ(reference::e4m3_encode(-0.f), 0x80);
  EXPECT_EQ(reference::e4m3_value(0x7e), 448.0);
  EXPECT_EQ(reference::e4m3_value(0x01), std::ldexp(1.0, -9));
  EXPECT_EQ(reference::e4m3_encode(1e6f), 0x7e);
  EXPECT_EQ(reference::e4m3_encode(-1e6f), 0xfe);
  EXPECT_EQ(reference::e4m3_encode(1.0625f), reference::e4m3_encode(1.f));   // tie to even (m = 0)
  EXPECT_EQ(reference::e4m3_encode(1.1875f), reference::e4m3_encode(1.25f));  // tie to even (m = 2)
  std::mt19937_64 rng(testing::fresh_seed());
  std::uniform_real_distribution<float> mant(-1.f, 1.f);
  std::uniform_int_distribution<int> expo(-14, 12);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::ldexp(mant(rng), expo(rng));
    const auto want = std::uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
    ASSERT_EQ(reference::e4m3_encode(x), want) << "x=" << x;
  }
  EXPECT_EQ(reference::e4m3_encode(NAN) & 0x7f, 0x7f);
}

// Append quantizes (the pool's bytes equal the host encoding of x / scale, per layer and head),
// gather dequantizes (scale * value rounded once to T), copy-on-write copies the bytes, from
// aligned and from misaligned K/V.
TYPED_TEST(KVCacheKernelTest, Fp8AppendGatherMatchHostQuantization) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  for (const std::int64_t d : {64, 128}) {
    const KVCacheLayout l = test_layout<T, std::uint8_t>(2, 32, 16, 3, d);
    const Fp8TestScales sc(l);
    KVPageAllocator alloc(l.num_pages, l.page_size, l.num_layers);
    DeviceBuffer<std::uint8_t> pool(l.total_elems());
    pool.poison();
    const auto s = alloc.add_sequence();
    auto [k1, v1] = append_tokens<std::uint8_t, T>(alloc, pool, l, 1, s, 37, seed, sc.get(), 4.f);
    const auto f = alloc.fork(s);
    auto [k2, v2] = append_tokens<std::uint8_t, T>(alloc, pool, l, 1, f, 4, seed + 7, sc.get(), 4.f);
    // Misaligned K/V (one element off 16 bytes): the one-element path.
    const std::int64_t row = l.num_kv_heads * d;
    auto k3 = testing::random_vector<T>(3 * row + 1, seed + 9, -4.f, 4.f);
    AppendPlan plan = alloc.plan_append(1, {s}, {3});
    ASSERT_TRUE(plan.copies.empty());
    DeviceBuffer<T> dk3(k3);
    DeviceBuffer<std::int64_t> slots(plan.slots);
    kv_cache_append(pool.get(), l, 1, slots.get(), 3, dk3.get() + 1, dk3.get() + 1, nullptr, nullptr, sc.get());
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<T> k3v(k3.begin() + 1, k3.end());
    auto cat = [](std::vector<T> a, const std::vector<T>& b) {
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    const auto host_pool = pool.download();
    for (const auto& [seq, kk, vv] : {std::tuple{s, cat(k1, k3v), cat(v1, k3v)}, std::tuple{f, cat(k1, k2), cat(v1, v2)}}) {
      const std::int64_t n = alloc.length(seq, 1), h = l.num_kv_heads;
      const auto pages = alloc.pages(seq);
      DeviceBuffer<std::int32_t> dpages(pages);
      DeviceBuffer<T> ko(h * n * d), vo(h * n * d);
      ko.poison();
      vo.poison();
      kv_cache_gather(pool.get(), l, 1, dpages.get(), n, ko.get(), vo.get(), nullptr, nullptr, sc.get());
      const auto gk = ko.download(), gv = vo.download();
      for (std::int64_t t = 0; t < n; ++t) {
        for (std::int64_t hh = 0; hh < h; ++hh) {
          for (std::int64_t c = 0; c < d; ++c) {
            const auto src = (t * h + hh) * d + c, dst = (hh * n + t) * d + c;
            const std::int64_t at = l.layer_elems() + pages[t / l.page_size] * l.page_elems() +
                                    (hh * l.page_size + t % l.page_size) * d + c;
            const float ks = sc.k[l.num_kv_heads + hh], vs = sc.v[l.num_kv_heads + hh];
            const std::uint8_t qk = reference::e4m3_quantize(to_float(kk[src]), ks);
            const std::uint8_t qv = reference::e4m3_quantize(to_float(vv[src]), vs);
            ASSERT_EQ(host_pool[at], qk) << "K bytes seq=" << seq << " t=" << t << " h=" << hh << " c=" << c;
            ASSERT_EQ(host_pool[at + h * l.page_size * d], qv) << "V bytes t=" << t << " h=" << hh << " c=" << c;
            ASSERT_EQ(to_float(gk[dst]), to_float(from_float<T>(float(reference::e4m3_value(qk)) * ks)))
                << "K t=" << t << " h=" << hh << " c=" << c;
            ASSERT_EQ(to_float(gv[dst]), to_float(from_float<T>(float(reference::e4m3_value(qv)) * vs)))
                << "V t=" << t << " h=" << hh << " c=" << c;
          }
        }
      }
    }
  }
}

// Decode over an FP8 pool against the double reference over the same e4m3 values and scales:
// group sizes 1, 2, 4, 8, 16 (and 3, 12, 32), contexts 1, 15, 16, 17, 4095 (mixed in one
// batch), 32768 once, both head dims, pages 8-256, the auto choice and both ring depths.
std::string argument_of(const std::function<void()>& call);
PagedDecodeArgs one_token_args(const KVCacheLayout& l, std::int64_t num_q_heads, const void* pool);

// Below compute capability 8.0 (e.g. FLASHKERNEL_FORCE_ARCH=75) decode over FP8 pages is refused,
// naming the pool's dtype; true when that is the case and was checked.
template <typename T>
bool fp8_decode_refused_here() {
  if (detail::current_compute_major() >= 8) return false;
  const KVCacheLayout l = test_layout<T, std::uint8_t>(1, 4, 16, 1, 64);
  DeviceBuffer<std::uint8_t> pool(l.total_elems());
  DeviceBuffer<float> scales(2);
  PagedDecodeArgs a = one_token_args(l, 1, pool.get());
  a.scales = KVScales{scales.get(), scales.get() + 1};
  EXPECT_EQ(argument_of([&] { paged_decode_attention(a); }), "layout.dtype");
  return true;
}

TYPED_TEST(KVCacheKernelTest, Fp8DecodeMatchesReference) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  using P = std::uint8_t;
  if (fp8_decode_refused_here<T>()) return;
  for (const std::int64_t group : {1, 2, 4, 8, 16}) {
    check_decode<T, P>({1, 15, 16, 17, 4095}, 2 * group, 2, 128, 16);
    check_decode<T, P>({17, 1, 300}, group, 1, 64, 8);
  }
  check_decode<T, P>({129, 2, 4095}, 12, 4, 128, 256);
  check_decode<T, P>({1000, 40}, 32, 1, 128, 32);
  check_decode<T, P>({77, 300}, 24, 8, 64, 16);
  check_decode<T, P>({32768}, 32, 8, 128, 16);
}

// The FP8 pool's error against the 16-bit pool on the same K/V (scales amax / 448 per head):
// bounded, and not zero (an FP8 path that silently kept 16 bits would fail). Bounds as in
// tests/python/test_kv_cache.py (FP8_MAX_REL_ERROR, FP8_MEAN_REL_ERROR).
TYPED_TEST(KVCacheKernelTest, Fp8DecodeErrorAgainstTheSixteenBitPool) {
  FK_SKIP_WITHOUT_GPU();
  using T = TypeParam;
  if (fp8_decode_refused_here<T>()) return;
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const std::int64_t hkv = 4, hq = 16, d = 128, ctx = 4095, batch = 2;
  const KVCacheLayout l16 = test_layout<T, T>(1, batch * 260, 16, hkv, d);
  const KVCacheLayout l8 = test_layout<T, std::uint8_t>(1, batch * 260, 16, hkv, d);
  KVPageAllocator a16(l16.num_pages, 16, 1), a8(l8.num_pages, 16, 1);
  DeviceBuffer<T> pool16(l16.total_elems());
  DeviceBuffer<std::uint8_t> pool8(l8.total_elems());
  const std::int64_t n = batch * ctx * hkv * d;
  const auto k = testing::random_vector<T>(n, seed), v = testing::random_vector<T>(n, seed + 1);
  std::vector<float> ks(hkv, 0.f), vs(hkv, 0.f);  // amax / 448 per head
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t h = (i / d) % hkv;
    ks[h] = std::max(ks[h], std::abs(to_float(k[i])) / 448.f);
    vs[h] = std::max(vs[h], std::abs(to_float(v[i])) / 448.f);
  }
  DeviceBuffer<float> dks(ks), dvs(vs);
  DeviceBuffer<T> dk(k), dv(v);
  std::vector<std::int64_t> ids16, ids8;
  for (std::int64_t b = 0; b < batch; ++b) ids16.push_back(a16.add_sequence()), ids8.push_back(a8.add_sequence());
  const std::vector<std::int64_t> counts(batch, ctx);
  const AppendPlan p16 = a16.plan_append(0, ids16, counts), p8 = a8.plan_append(0, ids8, counts);
  DeviceBuffer<std::int64_t> s16(p16.slots), s8(p8.slots);
  kv_cache_append(pool16.get(), l16, 0, s16.get(), batch * ctx, dk.get(), dv.get());
  kv_cache_append(pool8.get(), l8, 0, s8.get(), batch * ctx, dk.get(), dv.get(), nullptr, nullptr,
                  {dks.get(), dvs.get()});
  const auto q = testing::random_vector<T>(batch * hq * d, seed + 2);
  DeviceBuffer<T> dq(q);
  std::vector<std::vector<T>> outs;
  for (const bool fp8 : {false, true}) {
    std::int64_t max_pages = 0;
    const auto table = (fp8 ? a8 : a16).page_table(fp8 ? ids8 : ids16, &max_pages);
    DeviceBuffer<std::int32_t> dtable(table), dlens(std::vector<std::int32_t>(batch, std::int32_t(ctx)));
    DeviceBuffer<T> out(batch * hq * d);
    out.poison();
    PagedDecodeArgs a;
    a.q = dq.get();
    a.out = out.get();
    a.batch = batch;
    a.num_q_heads = hq;
    a.pool = fp8 ? static_cast<const void*>(pool8.get()) : pool16.get();
    a.layout = fp8 ? l8 : l16;
    a.page_table = dtable.get();
    a.max_pages = max_pages;
    a.seq_lens = dlens.get();
    a.max_seq_len = ctx;
    a.scale = float(1.0 / std::sqrt(double(d)));
    if (fp8) a.scales = {dks.get(), dvs.get()};
    DeviceBuffer<char> ws(std::int64_t(paged_decode_workspace_bytes(a)));
    a.workspace = ws.get();
    a.workspace_bytes = ws.bytes();
    paged_decode_attention(a);
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    outs.push_back(out.download());
  }
  double err_max = 0, err_sum = 0, ref_max = 0, ref_sum = 0;
  for (std::size_t i = 0; i < outs[0].size(); ++i) {
    const double r = to_float(outs[0][i]), e = std::abs(double(to_float(outs[1][i])) - r);
    ASSERT_FALSE(std::isnan(e)) << "index " << i;
    err_max = std::max(err_max, e);
    err_sum += e;
    ref_max = std::max(ref_max, std::abs(r));
    ref_sum += std::abs(r);
  }
  const double rel_max = err_max / ref_max, rel_mean = err_sum / ref_sum;
  std::printf("fp8 vs 16-bit pool: max abs error %.3e (%.3f of max |out|), mean %.3e (%.3f of mean |out|)\n",
              err_max, rel_max, err_sum / double(outs[0].size()), rel_mean);
  EXPECT_LE(rel_max, 0.12);
  EXPECT_LE(rel_mean, 0.08);
  EXPECT_GT(rel_mean, 1e-4);
}

// Device-side indices out of range: the kernels skip them (or write NaN), set the fault flag, and
// never touch memory outside the pool; the valid entries of the same call are processed.
TEST(KVCacheKernelIndexFaults, OutOfRangeIndicesAreSkippedAndFlagged) {
  FK_SKIP_WITHOUT_GPU();
  using T = __half;
  const KVCacheLayout l{1, 4, 16, 2, 64, DType::kFloat16};
  const std::int64_t row = l.num_kv_heads * l.head_dim, n_slots = l.num_pages * l.page_size;
  DeviceBuffer<T> pool(testing::random_vector<T>(l.total_elems(), 7));
  const auto before = pool.download();
  DeviceBuffer<std::int32_t> flag(1);
  auto read_flag = [&] {
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    const std::int32_t f = flag.download()[0];
    FK_CUDA_CHECK(cudaMemset(flag.get(), 0, sizeof(std::int32_t)));
    return f;
  };
  FK_CUDA_CHECK(cudaMemset(flag.get(), 0, sizeof(std::int32_t)));
  // append: slots -1 and n_slots are skipped, slot 3 is written.
  DeviceBuffer<std::int64_t> slots(std::vector<std::int64_t>{-1, 3, n_slots});
  DeviceBuffer<T> k(testing::random_vector<T>(3 * row, 8)), v(testing::random_vector<T>(3 * row, 9));
  kv_cache_append(pool.get(), l, 0, slots.get(), 3, k.get(), v.get(), nullptr, flag.get());
  EXPECT_EQ(read_flag(), kKVFaultSlots);
  auto after = pool.download();
  const auto hk = k.download();
  std::int64_t changed = 0;
  for (std::size_t i = 0; i < after.size(); ++i) changed += to_float(after[i]) != to_float(before[i]);
  EXPECT_LE(changed, 2 * row) << "only slot 3's K and V rows may change";
  EXPECT_EQ(to_float(after[3 * l.head_dim]), to_float(hk[row]));  // slot 3, K, head 0, column 0
  // decode: seq_lens[0] too long for the table, seq_lens[1] valid, page_table[2] out of range.
  DeviceBuffer<std::int32_t> table(std::vector<std::int32_t>{0, 1, 2, 3, 99, 0}), lens(std::vector<std::int32_t>{33, 20, 20});
  DeviceBuffer<T> q(testing::random_vector<T>(3 * row, 10)), out(3 * row);
  out.poison();
  PagedDecodeArgs a;
  a.q = q.get();
  a.out = out.get();
  a.batch = 3;
  a.num_q_heads = 2;
  a.pool = pool.get();
  a.layout = l;
  a.page_table = table.get();
  a.max_pages = 2;
  a.seq_lens = lens.get();
  a.max_seq_len = 32;
  a.scale = 0.125f;
  a.error_flag = flag.get();
  DeviceBuffer<char> ws(std::int64_t(paged_decode_workspace_bytes(a)));
  a.workspace = ws.get();
  a.workspace_bytes = ws.bytes();
  paged_decode_attention(a);
  EXPECT_EQ(read_flag(), kKVFaultSeqLens | kKVFaultPageTable);
  const auto o = out.download();
  for (std::int64_t i = 0; i < 3 * row; ++i) {
    const bool bad_row = i < row || i >= 2 * row;
    ASSERT_EQ(std::isnan(to_float(o[i])), bad_row) << "index " << i;
  }
  EXPECT_THROW(throw_kv_index_faults(kKVFaultSeqLens, l, "t"), ArgumentError);
}

// The argument an ArgumentError of `call` names ("" and a test failure when it does not throw one).
std::string argument_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ArgumentError& e) {
    return e.argument();
  }
  ADD_FAILURE() << "expected ArgumentError";
  return "";
}

// Decode arguments for one sequence of one token over `pool` (argument checks only: no launch).
PagedDecodeArgs one_token_args(const KVCacheLayout& l, std::int64_t num_q_heads, const void* pool) {
  PagedDecodeArgs a;
  a.layout = l;
  a.batch = 1;
  a.num_q_heads = num_q_heads;
  a.max_pages = 1;
  a.max_seq_len = 1;
  a.scale = 1.f;
  a.pool = pool;
  return a;
}

TEST(KVCacheKernelArguments, BadLayoutAndSizesNameTheArgument) {
  KVCacheLayout l{2, 8, 16, 2, 128, DType::kFloat16};
  alignas(16) static char dummy[16];
  PagedDecodeArgs a = one_token_args(l, 3, dummy);
  EXPECT_EQ(argument_of([&] { paged_decode_num_splits(a); }), "num_q_heads");
  a.num_q_heads = 4;
  a.max_seq_len = 17;
  EXPECT_EQ(argument_of([&] { paged_decode_num_splits(a); }), "max_seq_len");
  a.max_seq_len = 1;
  for (const int bad : {-2, 6}) {
    a.variant = static_cast<PagedDecodeVariant>(bad);
    EXPECT_EQ(argument_of([&] { paged_decode_num_splits(a); }), "variant") << bad;
  }
  EXPECT_EQ(argument_of([&] { kv_cache_gather(dummy, l, 2, nullptr, 0, nullptr, nullptr); }), "layer");
  EXPECT_EQ(argument_of([&] { kv_cache_append(dummy + 2, l, 0, nullptr, 0, nullptr, nullptr); }), "pool");
  // Scales belong to float8 pools only.
  alignas(16) static float one[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(argument_of([&] { kv_cache_append(dummy, l, 0, nullptr, 0, nullptr, nullptr, nullptr, nullptr,
                                              {one, nullptr}); }),
            "scales.k");
}

// An FP8 layout: activations must be 16-bit, scales are required, only the ring variants read it;
// float8 anywhere but a KV-cache pool is refused naming the argument.
TEST(KVCacheKernelArguments, Fp8LayoutScalesAndVariantNameTheArgument) {
  KVCacheLayout l{2, 8, 16, 2, 128, DType::kFloat8E4M3};
  EXPECT_EQ(l.io_dtype(), DType::kFloat16);
  EXPECT_EQ(l.bytes(), std::size_t(l.total_elems()));
  l.activation_dtype = DType::kFloat32;
  EXPECT_EQ(argument_of([&] { validate_kv_layout(l, "t"); }), "layout.activation_dtype");
  l.activation_dtype = DType::kFloat8E4M3;
  EXPECT_EQ(argument_of([&] { validate_kv_layout(l, "t"); }), "layout.activation_dtype");
  l.activation_dtype = DType::kBFloat16;
  validate_kv_layout(l, "t");
  alignas(16) static char dummy[16];
  alignas(16) static float one[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(argument_of([&] { kv_cache_gather(dummy, l, 0, nullptr, 0, nullptr, nullptr); }), "scales.k");
  EXPECT_EQ(argument_of([&] { kv_cache_append(dummy, l, 0, nullptr, 0, nullptr, nullptr, nullptr, nullptr,
                                              {one, nullptr}); }),
            "scales.v");
  PagedDecodeArgs a = one_token_args(l, 4, dummy);
  a.scales = {one, one};
  for (const auto v : {PagedDecodeVariant::kCudaCore, PagedDecodeVariant::kCudaCorePrefetch2,
                       PagedDecodeVariant::kCudaCorePrefetch4, PagedDecodeVariant::kTensorCore}) {
    a.variant = v;
    EXPECT_EQ(argument_of([&] { paged_decode_num_splits(a); }), "variant") << int(v);
  }
  EXPECT_EQ(std::string(dtype_name(DType::kFloat8E4M3)), "float8_e4m3fn");
  EXPECT_EQ(dtype_size(DType::kFloat8E4M3), 1u);
}

// float8_e4m3fn is a storage type of the KV cache pool only: the ops that compute on their inputs
// refuse it naming `dtype`, before any work (here on empty inputs, which need no GPU).
TEST(KVCacheKernelArguments, Float8IsRefusedByComputeOps) {
  constexpr DType f8 = DType::kFloat8E4M3;
  EXPECT_EQ(argument_of([&] { vector_add(nullptr, nullptr, nullptr, 0, f8); }), "dtype");
  EXPECT_EQ(argument_of([&] { reduce_full(nullptr, reinterpret_cast<void*>(16), 0, f8, ReduceOp::kSum, nullptr, 0); }),
            "dtype");
  EXPECT_EQ(argument_of([&] {
              reduce_rows(nullptr, reinterpret_cast<void*>(16), 0, 0, f8, ReduceOp::kSum);
            }),
            "dtype");
  EXPECT_EQ(argument_of([&] {
              add_layernorm(reinterpret_cast<void*>(16), nullptr, nullptr, nullptr, nullptr,
                            reinterpret_cast<void*>(32), nullptr, 0, 64, 1e-5f, f8);
            }),
            "dtype");
}


}  // namespace
}  // namespace flashkernel
