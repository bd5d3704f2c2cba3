// Paged KV cache kernels from C++: append + gather round trip through allocator plans (with a
// copy-on-write), decode attention against the double-precision CPU reference, argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/launch.h"
#include "flashkernel/kv_cache.h"
#include "reference/kv_cache_reference.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using testing::DeviceBuffer;

template <typename T>
class KVCacheKernelTest : public ::testing::Test {};
TYPED_TEST_SUITE(KVCacheKernelTest, testing::HalfDtypes);

// Appends `n` tokens to one sequence of `layer`; returns the host K and V written ([n, H, d]).
template <typename T>
std::pair<std::vector<T>, std::vector<T>> append_tokens(KVPageAllocator& alloc, DeviceBuffer<T>& pool,
                                                        const KVCacheLayout& l, std::int64_t layer, std::int64_t seq,
                                                        std::int64_t n, std::uint64_t seed) {
  AppendPlan plan = alloc.plan_append(layer, {seq}, {n});
  if (!plan.copies.empty()) {
    std::vector<std::int32_t> src, dst;
    for (auto c : plan.copies) src.push_back(c.src), dst.push_back(c.dst);
    DeviceBuffer<std::int32_t> dsrc(src), ddst(dst);
    kv_cache_copy_pages(pool.get(), l, dsrc.get(), ddst.get(), std::int64_t(src.size()));
    FK_CUDA_CHECK(cudaDeviceSynchronize());
  }
  auto k = testing::random_vector<T>(n * l.num_kv_heads * l.head_dim, seed);
  auto v = testing::random_vector<T>(n * l.num_kv_heads * l.head_dim, seed + 1);
  DeviceBuffer<T> dk(k), dv(v);
  DeviceBuffer<std::int64_t> slots(plan.slots);
  kv_cache_append(pool.get(), l, layer, slots.get(), n, dk.get(), dv.get());
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

template <typename T>
void check_decode(std::vector<std::int32_t> lens, std::int64_t hq, std::int64_t hkv, std::int64_t d,
                  std::int64_t page_size) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " hq=" + std::to_string(hq) + " hkv=" + std::to_string(hkv) +
               " d=" + std::to_string(d) + " page=" + std::to_string(page_size));
  std::int64_t pages = 2;
  for (auto n : lens) pages += (n + page_size - 1) / page_size;
  KVCacheLayout l{1, pages, page_size, hkv, d, dtype_of<T>()};
  KVPageAllocator alloc(l.num_pages, l.page_size, 1);
  DeviceBuffer<T> pool(l.total_elems());
  pool.poison();
  std::vector<std::int64_t> ids;
  for (std::size_t b = 0; b < lens.size(); ++b) {
    ids.push_back(alloc.add_sequence());
    append_tokens(alloc, pool, l, 0, ids.back(), lens[b], seed + 17 * b);
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
  std::vector<double> want;
  reference::paged_decode_attention(pool.download(), l, 0, q, batch, hq, table, max_pages, lens, a.scale, want);
  double max_abs = 0;
  for (double w : want) max_abs = std::max(max_abs, std::abs(w));
  // fp32 accumulation, one final rounding: a few ulps of the output's scale.
  const double tol = 4 * testing::rounding_tolerance<T>() * std::max(max_abs, 1e-3);
  // Every loop variant on the same inputs: the automatic choice and each one by name (the tensor
  // cores from compute capability 8.0).
  std::vector<PagedDecodeVariant> variants{PagedDecodeVariant::kAuto, PagedDecodeVariant::kCudaCore,
                                         PagedDecodeVariant::kCudaCorePrefetch2, PagedDecodeVariant::kCudaCorePrefetch4};
  if (detail::current_compute_major() >= 8) {
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

TEST(KVCacheKernelArguments, BadLayoutAndSizesNameTheArgument) {
  KVCacheLayout l{2, 8, 16, 2, 128, DType::kFloat16};
  PagedDecodeArgs a;
  a.layout = l;
  a.batch = 1;
  a.num_q_heads = 3;
  a.max_pages = 1;
  a.max_seq_len = 1;
  a.scale = 1.f;
  alignas(16) static char dummy[16];
  a.pool = dummy;
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
}

}  // namespace
}  // namespace flashkernel
