// Paged decode attention launcher: argument checks, the split-KV grid heuristic, and the kernel that
// combines the splits' partial outputs by their log-sum-exps.
#include <algorithm>
#include <atomic>
#include <limits>
#include <string>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/launch.h"
#include "common/online_softmax.cuh"
#include "flashkernel/kv_cache.h"
#include "kv_cache/paged_decode_kernel.cuh"

namespace flashkernel {
namespace {

using kv_decode::Params;

// The shortest split: one ring step per warp (4 warps x 16 tokens). Short splits only win where
// the grid would otherwise not fill the GPU (batch 1, few KV heads); the wave-quantization rule
// in make_plan takes the fewest splits within 5% of the best, so larger grids keep long splits.
constexpr int kMinSplitTokens = 64;
constexpr int kMaxSplits = 128;
// Split sizes are multiples of this: whole loop iterations for every variant and head dim.
constexpr int kSplitQuantum = 64;
constexpr int kTensorCoreVariant = int(PagedDecodeVariant::kTensorCore);  // paged_decode_mma_kernel (groups of 4-16)
// The default on compute capability 8.0+, for 16-bit and float8 pools and every group size: the
// deep shared-memory ring with whole-row copies. Measured against the register-fed variant 3 on
// an H100 (bench/results/nvidia-h100-80gb-hbm3/kv_cache.csv, DEVELOPMENT_LOG.md) it was as fast
// or faster on every configuration of the grid: 0.95-1.01x SDPA at context >= 4096 where
// variant 3 reached 0.48-0.95x.
constexpr int kDefaultVariant = int(PagedDecodeVariant::kTensorCoreRing);


// Calls fn(TypeTag<T>{}, TypeTag<S>{}): T the q/out type, S the pool's element type.
template <typename Fn>
void dispatch_decode_types(const KVCacheLayout& l, const char* op, Fn&& fn) {
  dispatch_half_dtype(l.io_dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (l.quantized()) {
      fn(tag, TypeTag<__nv_fp8_e4m3>{});
    } else {
      fn(tag, TypeTag<T>{});
    }
  });
}

// Resident CTAs per SM of the kernel a launch will use (from its register count and shared
// memory), cached. `dtype`: the pool's; a float8 pool is measured with its float16-activation
// kernel (the bfloat16 one has the same shared memory, which sets its occupancy).
int resident_ctas_per_sm(DType dtype, int head_dim, int g, int variant) {
  static std::atomic<int> cache[3][2][5][kv_decode::kNumVariants];
  const int gi = g == 1 ? 0 : g == 2 ? 1 : g == 4 ? 2 : g == 8 ? 3 : 4;
  const int di = dtype == DType::kFloat8E4M3 ? 2 : dtype == DType::kBFloat16 ? 1 : 0;
  std::atomic<int>& slot = cache[di][head_dim == 128][gi][variant];
  int n = slot.load(std::memory_order_relaxed);
  if (n > 0) return n;
  n = 0;
  KVCacheLayout l;
  l.dtype = dtype;
  l.activation_dtype = DType::kFloat16;
  dispatch_decode_types(l, "paged_decode_attention", [&](auto t_tag, auto s_tag) {
    using T = typename decltype(t_tag)::type;
    using S = typename decltype(s_tag)::type;
    kv_decode::launch_paged_decode_dtype(kv_decode::Params{}, static_cast<const T*>(nullptr),
                                         static_cast<const S*>(nullptr), head_dim, g, variant, dim3(), nullptr, &n);
  });
  n = std::max(n, 1);
  slot.store(n, std::memory_order_relaxed);
  return n;
}

// Query heads per CTA (G): the group rounded up to a power of two, at most 8, or 16 (one mma row
// block) for the ring kernels (variants 4, 5); larger groups take several head chunks, each
// reading the KV head again.
int heads_per_cta(std::int64_t group, int variant) {
  if (group <= 1) return 1;
  if (group <= 2) return 2;
  if (group <= 4) return 4;
  if (group <= 8 || !kv_decode::is_ring_variant(variant)) return 8;
  return 16;
}

struct Plan {
  int g, head_chunks, num_splits, split_tokens, variant;
};

Plan make_plan(const PagedDecodeArgs& a) {
  Plan pl{};
  const std::int64_t group = a.num_q_heads / a.layout.num_kv_heads;
  // The tensor-core variant is sm_80 code: older GPUs run the CUDA-core loop (validate() refuses
  // the tensor cores asked for by name there).
  pl.variant = a.variant != PagedDecodeVariant::kAuto          ? int(a.variant)
               : detail::current_compute_major() >= 8 ? kDefaultVariant
                                                       : 0;
  pl.g = heads_per_cta(group, pl.variant);
  pl.head_chunks = static_cast<int>(detail::ceil_div(group, pl.g));
  const std::int64_t ctas = a.batch * a.layout.num_kv_heads * pl.head_chunks;
  const std::int64_t resident = std::int64_t(detail::current_sm_count()) *
                                resident_ctas_per_sm(a.layout.dtype, int(a.layout.head_dim), pl.g, pl.variant);
  // Wave quantization: with W = ceil(ctas * S / resident) waves of 1/S of the work each, time is
  // proportional to W / S. Take the smallest S within 5% of the best achievable (ctas / resident,
  // or 1 / S_max when even S_max splits do not fill one wave): fewer splits, less combine work.
  const std::int64_t max_splits =
      std::max<std::int64_t>(1, std::min<std::int64_t>(detail::ceil_div(a.max_seq_len, kMinSplitTokens), kMaxSplits));
  auto cost = [&](std::int64_t s) { return double(detail::ceil_div(ctas * s, resident)) / double(s); };
  double best = cost(1);
  for (std::int64_t s = 2; s <= max_splits; ++s) best = std::min(best, cost(s));
  std::int64_t splits = 1;
  while (cost(splits) > best * 1.05) ++splits;
  std::int64_t tokens = detail::ceil_div(detail::ceil_div(a.max_seq_len, splits), kSplitQuantum) * kSplitQuantum;
  pl.split_tokens = static_cast<int>(tokens);
  pl.num_splits = static_cast<int>(detail::ceil_div(a.max_seq_len, tokens));
  return pl;
}

void validate(const PagedDecodeArgs& a) {
  constexpr const char* kOp = "paged_decode_attention";
  validate_kv_layout(a.layout, kOp);
  detail::require(a.pool != nullptr && is_aligned(a.pool), kOp, "pool", "must be a non-null 16-byte aligned pointer");
  detail::require(a.layer >= 0 && a.layer < a.layout.num_layers, kOp, "layer",
                  "must be in [0, " + std::to_string(a.layout.num_layers) + "), got " + std::to_string(a.layer));
  detail::require(a.batch >= 0 && a.batch <= 65535, kOp, "batch", "must be in [0, 65535], got " + std::to_string(a.batch));
  detail::require(a.num_q_heads >= 1 && a.num_q_heads <= 8192 && a.num_q_heads % a.layout.num_kv_heads == 0, kOp, "num_q_heads",
                  "must be a multiple of num_kv_heads (" + std::to_string(a.layout.num_kv_heads) + ") in [1, 8192], got " +
                      std::to_string(a.num_q_heads));
  detail::require(a.max_pages >= 1 && a.max_pages <= std::numeric_limits<std::int32_t>::max(), kOp, "max_pages",
                  "must be in [1, 2^31), got " + std::to_string(a.max_pages));
  detail::require(a.max_seq_len >= 1 && a.max_seq_len <= a.max_pages * a.layout.page_size, kOp, "max_seq_len",
                  "must be in [1, max_pages * page_size = " + std::to_string(a.max_pages * a.layout.page_size) +
                      "], got " + std::to_string(a.max_seq_len));
  detail::require(a.max_seq_len < (std::int64_t(1) << 30), kOp, "max_seq_len", "must be < 2^30");
  detail::require(a.scale > 0.f, kOp, "scale", "must be > 0, got " + std::to_string(a.scale));
  detail::require(int(a.variant) >= int(PagedDecodeVariant::kAuto) && int(a.variant) < kv_decode::kNumVariants, kOp,
                  "variant",
                  "must be a PagedDecodeVariant (-1.." + std::to_string(kv_decode::kNumVariants - 1) + "), got " +
                      std::to_string(int(a.variant)));
  if (a.layout.quantized()) {
    detail::require(a.variant == PagedDecodeVariant::kAuto || kv_decode::is_ring_variant(int(a.variant)), kOp, "variant",
                    "must be -1 (auto), 4 or 5 for a float8 pool (only the shared-memory ring variants read FP8), "
                    "got " + std::to_string(int(a.variant)));
    detail::require(detail::current_compute_major() >= 8, kOp, "layout.dtype",
                    "float8_e4m3fn pools need compute capability 8.0 or newer (the ring kernel: mma.sync, cp.async)");
  }
  if (int(a.variant) >= kTensorCoreVariant) {
    // On sm_75 they run in fp16 (mma.sync m16n8k8, synchronous copies); bf16 is refused by dtype.
    detail::require(detail::current_compute_capability() >= detail::kMinTensorCoreArch, kOp, "variant",
                    "the tensor-core variants (3-5) need compute capability 7.5 or newer (mma.sync)");
    detail::require_tensor_core_dtype(kOp, a.layout.dtype);
  }
  validate_kv_scales(a.layout, a.scales, kOp);
  if (a.batch == 0) return;
  detail::require(a.q != nullptr && is_aligned(a.q), kOp, "q", "must be a non-null 16-byte aligned pointer");
  detail::require(a.out != nullptr, kOp, "out", "must be a non-null device pointer");
  detail::require(a.page_table != nullptr, kOp, "page_table", "must be a non-null device pointer");
  detail::require(a.seq_lens != nullptr, kOp, "seq_lens", "must be a non-null device pointer");
}

// One CTA per (sequence, q head), one thread per output column. Launched as a programmatic
// dependent of the decode kernel: its CTAs may be resident before the decode grid ends and wait
// here for its partial outputs, so no launch gap separates the two kernels.
template <typename T>
__global__ void combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_lse, T* out,
                               int num_splits, int head_dim) {
  pdl::wait_for_prior_grid();
  pdl::allow_dependents();  // the next kernel may be scheduled: it waits for this grid in turn
  const std::int64_t bh = blockIdx.x;
  const float* lse = part_lse + bh * num_splits;
  float lse_max = softmax::kNegInf;
  for (int s = 0; s < num_splits; ++s) lse_max = fmaxf(lse_max, lse[s]);
  const int c = threadIdx.x;
  float num = 0.f, den = 0.f;
#pragma unroll 4
  for (int s = 0; s < num_splits; ++s) {
    const float w = softmax::combine_weight(lse[s], lse_max);
    den += w;
    num = fmaf(w, part_o[(bh * num_splits + s) * head_dim + c], num);
  }
  // A split that met an out-of-range index reported lse = NaN: den is then NaN, and so is the
  // output (den > 0 alone would turn it into a plausible-looking 0).
  out[bh * head_dim + c] = from_float<T>(den > 0.f || den != den ? num / den : 0.f);
}

}  // namespace

std::int64_t paged_decode_num_splits(const PagedDecodeArgs& args) {
  validate(args);
  return args.batch == 0 ? 1 : make_plan(args).num_splits;
}

std::size_t paged_decode_workspace_bytes(const PagedDecodeArgs& args) {
  std::int64_t s = paged_decode_num_splits(args);
  if (s <= 1) return 0;
  const std::int64_t rows = args.batch * args.num_q_heads * s;
  // part_o then part_lse; part_o's size keeps part_lse 16-byte aligned (head_dim is 64 or 128).
  return static_cast<std::size_t>(rows * args.layout.head_dim + rows) * sizeof(float);
}

void paged_decode_attention(const PagedDecodeArgs& a, cudaStream_t stream) {
  constexpr const char* kOp = "paged_decode_attention";
  validate(a);
  if (a.batch == 0) return;
  const Plan pl = make_plan(a);
  const std::size_t need = paged_decode_workspace_bytes(a);
  detail::require(a.workspace_bytes >= need && (need == 0 || a.workspace != nullptr), kOp, "workspace",
                  "must hold " + std::to_string(need) + " bytes (paged_decode_workspace_bytes), got " +
                      std::to_string(a.workspace_bytes));
  Params p{};
  p.q = a.q;
  p.out = a.out;
  const std::int64_t rows = a.batch * a.num_q_heads * pl.num_splits;
  p.part_o = static_cast<float*>(a.workspace);
  p.part_lse = need ? p.part_o + rows * a.layout.head_dim : nullptr;
  p.page_elems = a.layout.page_elems();
  p.pool = static_cast<const char*>(a.pool) + a.layer * a.layout.layer_elems() * std::int64_t(dtype_size(a.layout.dtype));
  if (a.layout.quantized()) {
    p.k_scale = a.scales.k + a.layer * a.layout.num_kv_heads;
    p.v_scale = a.scales.v + a.layer * a.layout.num_kv_heads;
  }
  p.num_kv_heads = static_cast<int>(a.layout.num_kv_heads);
  int log2ps = 0;
  while ((std::int64_t(1) << log2ps) < a.layout.page_size) ++log2ps;
  p.page_size_log2 = log2ps;
  p.page_table = a.page_table;
  p.max_pages = static_cast<int>(a.max_pages);
  p.num_pages = static_cast<int>(a.layout.num_pages);
  p.seq_lens = a.seq_lens;
  p.error_flag = a.error_flag;
  p.num_q_heads = static_cast<int>(a.num_q_heads);
  p.group = static_cast<int>(a.num_q_heads / a.layout.num_kv_heads);
  p.head_chunks = pl.head_chunks;
  p.num_splits = pl.num_splits;
  p.split_tokens = pl.split_tokens;
  p.scale_log2 = a.scale * softmax::kLog2e;
  const dim3 grid(static_cast<unsigned>(pl.num_splits), static_cast<unsigned>(a.layout.num_kv_heads * pl.head_chunks),
                  static_cast<unsigned>(a.batch));
  const int d = static_cast<int>(a.layout.head_dim);
  dispatch_decode_types(a.layout, kOp, [&](auto t_tag, auto s_tag) {
    using T = typename decltype(t_tag)::type;
    using S = typename decltype(s_tag)::type;
    kv_decode::launch_paged_decode_dtype(p, static_cast<const T*>(nullptr), static_cast<const S*>(nullptr), d, pl.g,
                                         pl.variant, grid, stream);
    FK_CHECK_LAUNCH();
    if (pl.num_splits > 1) {
      pdl::launch_dependent(combine_kernel<T>, dim3(static_cast<unsigned>(a.batch * a.num_q_heads)), dim3(d), 0,
                            stream, static_cast<const float*>(p.part_o), static_cast<const float*>(p.part_lse),
                            static_cast<T*>(a.out), pl.num_splits, d);
    }
  });
}

}  // namespace flashkernel
