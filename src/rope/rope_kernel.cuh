// The RoPE kernel shared by the table and fused variants, and the host-side launch plan.
//
// Work decomposition: one thread owns one "unit" of one head-dimension slice of one token and walks
// a strided subset of that token's heads (q heads first, then k heads, in a single launch):
//   * a rotating unit (neox) holds EV pairs (x[i0..i0+EV), x[r/2+i0..r/2+i0+EV)): two 16-byte vectors;
//   * a rotating unit (gptj) holds one 16-byte vector = EV/2 adjacent pairs;
//   * a copy unit (out of place, rotary_dim < head_dim) copies one vector of the pass-through dims.
// The unit's cos/sin (table rows or sincosf of in-kernel angles) are fetched once into registers
// and reused for every head the thread visits, so table traffic is per (token, pair), not per head.
// Heads are split into `head_groups` interleaved subsets only as far as needed to fill the GPU.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/index_guard.cuh"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/rope.h"

namespace flashkernel::rope_detail {

constexpr int kThreads = 256;
// Heads a thread loads before it stores. neox: one head (two 16-byte loads in flight) at 4 blocks
// of 256 per SM (64 registers, no spill) beat two heads at 3 blocks (85 registers) by 3-6% of
// copy speed for bf16 in the sweep of docs/ops/rope.md, step 3 (occupancy, not loads per thread,
// is what hides the latency here); two heads at a 64-register cap spilled and fell to 0.59x.
// gptj (one vector per head, not swept): 4 heads at 3 blocks per SM, as before.
template <RopeStyle kStyle>
constexpr int head_unroll() {
  return kStyle == RopeStyle::kNeox ? 1 : 4;
}
template <RopeStyle kStyle>
constexpr int min_blocks_per_sm() {
  return kStyle == RopeStyle::kNeox ? 4 : 3;
}

struct InvFreq {
  float v[kRopeMaxRotaryDim / 2];
};
struct NoInvFreq {};

struct Params {
  RopeTensor q, k;
  RopePositions positions;
  std::int64_t batch, seq, head_dim, rotary_dim;
  const void* cos;
  const void* sin;
  std::int64_t table_positions;
  int rot_units;    // rotating units per head
  int units;        // rotating + copy units per head
  int head_groups;  // interleaved head subsets (threads per (token, unit))
  std::int64_t total_threads;
};

// EV elements of T: one 16-byte vector on the fast path, elementwise otherwise. Aligned so that
// adjacent 16-bit elements can be converted as one packed pair.
template <typename T, int EV>
struct alignas(EV * sizeof(T) >= 16 ? 16 : EV * sizeof(T)) Pack {
  T v[EV];
};

// Packed 16-bit <-> fp32 conversions (common/dtype_traits.cuh): one cvt per two elements.
template <typename T, int EV>
__device__ __forceinline__ void unpack(const Pack<T, EV>& p, float (&f)[EV]) {
  to_float_array(p.v, f);
}

template <typename T, int EV>
__device__ __forceinline__ Pack<T, EV> pack(const float (&f)[EV]) {
  Pack<T, EV> p;
  from_float_array(f, p.v);
  return p;
}

template <typename T, int EV>
__device__ __forceinline__ Pack<T, EV> load_pack(const T* p) {
  Pack<T, EV> out;
  if constexpr (EV * sizeof(T) == kVectorBytes) {
    Vec<T> v = load_vec_stream(p);
#pragma unroll
    for (int j = 0; j < EV; ++j) out.v[j] = v.v[j];
  } else {
#pragma unroll
    for (int j = 0; j < EV; ++j) out.v[j] = p[j];
  }
  return out;
}

template <typename T, int EV>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, EV>& x) {
  if constexpr (EV * sizeof(T) == kVectorBytes) {
    Vec<T> v;
#pragma unroll
    for (int j = 0; j < EV; ++j) v.v[j] = x.v[j];
    store_vec(p, v);
  } else {
#pragma unroll
    for (int j = 0; j < EV; ++j) p[j] = x.v[j];
  }
}

// N consecutive table entries as one (or two) aligned loads; the launcher guarantees alignment.
template <typename TT, int N>
struct alignas(N * sizeof(TT) >= 16 ? 16 : N * sizeof(TT)) TableChunk {
  TT v[N];
};

template <typename TT, int N>
__device__ __forceinline__ void load_table(const TT* p, float* out) {
  TableChunk<TT, N> c = *reinterpret_cast<const TableChunk<TT, N>*>(p);
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = to_float(c.v[j]);
}

__device__ __forceinline__ float rot_first(float a, float b, float c, float s) { return fmaf(a, c, -b * s); }
__device__ __forceinline__ float rot_second(float a, float b, float c, float s) { return fmaf(b, c, a * s); }

// kHeadUnroll, kMinBlocks and kIndex32 are template parameters (defaulted to the shipped values)
// so a tuning sweep (bench/cpp/rope_variants_bench.cu) can instantiate alternatives; the library
// instantiates the defaults, with kIndex32 on for every launch that allows it (launch_with).
// kIndex32: the thread -> (unit, token, head group) decomposition in 32-bit unsigned arithmetic
// (three 64-bit divisions per thread otherwise); only for launches of fewer than 2^32 threads.
template <typename T, typename TT, RopeStyle kStyle, bool kFused, int EV, int kHeadUnroll = head_unroll<kStyle>(),
          int kMinBlocks = min_blocks_per_sm<kStyle>(), bool kIndex32 = false>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    rope_kernel(const __grid_constant__ Params p,
                const __grid_constant__ std::conditional_t<kFused, InvFreq, NoInvFreq> inv) {
  constexpr bool kNeox = kStyle == RopeStyle::kNeox;
  constexpr int kPairs = kNeox ? EV : EV / 2;  // pairs (and cos/sin entries) per rotating unit
  // unit fastest, then token, then head group: a warp covers consecutive tokens of the same heads,
  // i.e. contiguous rows of [B, H, N, d] storage, so DRAM sees long sequential streams (ordering
  // the head group before the token scattered each warp over several heads and cost ~10%).
  int unit, group;
  std::int64_t token, b, n;
  if constexpr (kIndex32) {
    const std::uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= static_cast<std::uint32_t>(p.total_threads)) return;
    const std::uint32_t units = static_cast<std::uint32_t>(p.units);
    const std::uint32_t tokens = static_cast<std::uint32_t>(p.batch * p.seq);
    const std::uint32_t seq = static_cast<std::uint32_t>(p.seq);
    unit = static_cast<int>(t % units);
    const std::uint32_t rest = t / units;
    const std::uint32_t tok = rest % tokens;
    group = static_cast<int>(rest / tokens);
    token = tok;
    b = tok / seq;
    n = tok - static_cast<std::uint32_t>(b) * seq;
  } else {
    const std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= p.total_threads) return;
    const std::int64_t tokens = p.batch * p.seq;
    unit = static_cast<int>(t % p.units);
    const std::int64_t rest = t / p.units;
    token = rest % tokens;
    group = static_cast<int>(rest / tokens);
    b = token / p.seq;
    n = token - b * p.seq;
  }
  const std::int64_t hq = p.q.heads;
  const std::int64_t heads = hq + p.k.heads;
  const std::int64_t half = p.rotary_dim / 2;

  // This token's head-0 rows of q and k, computed once; a head then costs one multiply-add.
  const T* q_in = static_cast<const T*>(p.q.in) + b * p.q.in_stride_b + n * p.q.in_stride_n;
  T* q_out = static_cast<T*>(p.q.out) + b * p.q.out_stride_b + n * p.q.out_stride_n;
  const T* k_in = static_cast<const T*>(p.k.in) + b * p.k.in_stride_b + n * p.k.in_stride_n;
  T* k_out = static_cast<T*>(p.k.out) + b * p.k.out_stride_b + n * p.k.out_stride_n;
  auto locate = [&](std::int64_t h, const T*& in, T*& out) {
    const bool is_q = h < hq;
    const std::int64_t hh = is_q ? h : h - hq;
    in = (is_q ? q_in : k_in) + hh * (is_q ? p.q.in_stride_h : p.k.in_stride_h);
    out = (is_q ? q_out : k_out) + hh * (is_q ? p.q.out_stride_h : p.k.out_stride_h);
  };
  const std::int64_t step = p.head_groups;

  if (unit >= p.rot_units) {
    // Pass-through dims: a plain copy (only launched out of place).
    const std::int64_t e0 = p.rotary_dim + std::int64_t(unit - p.rot_units) * EV;
    for (std::int64_t h0 = group; h0 < heads; h0 += step * kHeadUnroll) {
#pragma unroll
      for (int u = 0; u < kHeadUnroll; ++u) {
        const std::int64_t h = h0 + u * step;
        if (h >= heads) break;
        const T* in;
        T* out;
        locate(h, in, out);
        if constexpr (EV * sizeof(T) == kVectorBytes) {
          store_pack<T, EV>(out + e0, load_pack<T, EV>(in + e0));
        } else {
          for (int j = 0; j < EV && e0 + j < p.head_dim; ++j) out[e0 + j] = in[e0 + j];
        }
      }
    }
    return;
  }

  // Position of this token.
  std::int64_t pos = n;
  if (p.positions.data != nullptr) {
    const std::int64_t idx = p.positions.per_batch ? token : n;
    pos = p.positions.is_int64 ? static_cast<const std::int64_t*>(p.positions.data)[idx]
                               : std::int64_t(static_cast<const std::int32_t*>(p.positions.data)[idx]);
  }
  // First pair index and first element offset of this unit.
  const std::int64_t i0 = std::int64_t(unit) * kPairs;
  const std::int64_t e_lo = kNeox ? i0 : 2 * i0;

  float c[kPairs], s[kPairs];
  if constexpr (kFused) {
    // Same angle as the table builder: one fp32 multiply, then accurate sincosf.
    const float fp = static_cast<float>(pos);
#pragma unroll
    for (int j = 0; j < kPairs; ++j) sincosf(fp * inv.v[i0 + j], &s[j], &c[j]);
  } else {
    if (detail::index_in_range(pos, p.table_positions)) {
      load_table<TT, kPairs>(static_cast<const TT*>(p.cos) + pos * half + i0, c);
      load_table<TT, kPairs>(static_cast<const TT*>(p.sin) + pos * half + i0, s);
    } else {
      // Out-of-table position: never read past the table; make the result visibly wrong.
#pragma unroll
      for (int j = 0; j < kPairs; ++j) c[j] = s[j] = __int_as_float(0x7fffffff);
    }
  }

  for (std::int64_t h0 = group; h0 < heads; h0 += step * kHeadUnroll) {
    Pack<T, EV> lo[kHeadUnroll], hi[kHeadUnroll];
#pragma unroll
    for (int u = 0; u < kHeadUnroll; ++u) {
      const std::int64_t h = h0 + u * step;
      if (h < heads) {
        const T* in;
        T* out;
        locate(h, in, out);
        lo[u] = load_pack<T, EV>(in + e_lo);
        if constexpr (kNeox) hi[u] = load_pack<T, EV>(in + e_lo + half);
      }
    }
#pragma unroll
    for (int u = 0; u < kHeadUnroll; ++u) {
      const std::int64_t h = h0 + u * step;
      if (h < heads) {
        const T* in;
        T* out;
        locate(h, in, out);
        if constexpr (kNeox) {
          float a[EV], bb[EV], ra[EV], rb[EV];
          unpack<T, EV>(lo[u], a);
          unpack<T, EV>(hi[u], bb);
#pragma unroll
          for (int j = 0; j < EV; ++j) {
            ra[j] = rot_first(a[j], bb[j], c[j], s[j]);
            rb[j] = rot_second(a[j], bb[j], c[j], s[j]);
          }
          store_pack<T, EV>(out + e_lo, pack<T, EV>(ra));
          store_pack<T, EV>(out + e_lo + half, pack<T, EV>(rb));
        } else {
          float x[EV], r[EV];
          unpack<T, EV>(lo[u], x);
#pragma unroll
          for (int j = 0; j < kPairs; ++j) {
            r[2 * j] = rot_first(x[2 * j], x[2 * j + 1], c[j], s[j]);
            r[2 * j + 1] = rot_second(x[2 * j], x[2 * j + 1], c[j], s[j]);
          }
          store_pack<T, EV>(out + e_lo, pack<T, EV>(r));
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------ host side

inline bool aligned16(const void* ptr) { return is_aligned(ptr); }

// Whether q, k (and the tables) allow 16-byte vectors of T for every unit.
template <typename T>
bool can_vectorize(const Params& p, RopeStyle style, bool check_tables) {
  constexpr std::int64_t ev = kVectorBytes / sizeof(T);
  if (p.head_dim % ev != 0) return false;
  if (p.rotary_dim % (style == RopeStyle::kNeox ? 2 * ev : ev) != 0) return false;
  for (const RopeTensor* x : {&p.q, &p.k}) {
    if (x->heads == 0) continue;
    for (std::int64_t st : {x->in_stride_b, x->in_stride_h, x->in_stride_n, x->out_stride_b, x->out_stride_h,
                            x->out_stride_n}) {
      if (st % ev != 0) return false;
    }
    if (!aligned16(x->in) || !aligned16(x->out)) return false;
  }
  if (check_tables && (!aligned16(p.cos) || !aligned16(p.sin))) return false;
  return true;
}

// Waves of threads (at 2048 per SM) to launch before threads start walking several heads each:
// 16 (shorter threads, a smaller tail wave) measured ~2% of copy speed above 4 in the sweep.
constexpr int kTargetWaves = 16;

// Fills in the unit counts and head groups of p for a launch of units of EV elements.
template <RopeStyle kStyle, int EV>
void plan(Params& p, bool inplace, int target_waves) {
  const std::int64_t half = p.rotary_dim / 2;
  p.rot_units = static_cast<int>(kStyle == RopeStyle::kNeox ? half / EV : p.rotary_dim / EV);
  const int copy_units = inplace ? 0 : static_cast<int>(detail::ceil_div(p.head_dim - p.rotary_dim, EV));
  p.units = p.rot_units + copy_units;
  const std::int64_t tokens = p.batch * p.seq;
  const std::int64_t heads = p.q.heads + p.k.heads;
  // Enough threads for kTargetWaves full waves; beyond that each thread walks more heads (more
  // reuse of its cos/sin registers, fewer index computations). The head groups of one token
  // re-read the same cos/sin row, which is small and stays in L2.
  const std::int64_t target = std::int64_t(detail::current_sm_count()) * 2048 * target_waves;
  const std::int64_t base_threads = tokens * p.units;
  p.head_groups = static_cast<int>(std::clamp<std::int64_t>(detail::ceil_div(target, base_threads), 1, heads));
  p.total_threads = base_threads * p.head_groups;
}

// Plans, then launches one instantiation.
template <typename T, typename TT, bool kFused, RopeStyle kStyle, int EV, typename Inv>
void launch_with(Params p, const Inv& inv, bool inplace, cudaStream_t stream) {
  plan<kStyle, EV>(p, inplace, kTargetWaves);
  const std::int64_t blocks = detail::ceil_div(p.total_threads, kThreads);
  constexpr int kUnroll = head_unroll<kStyle>(), kBlocks = min_blocks_per_sm<kStyle>();
  // 32-bit index math wherever the launch allows it: 1-3% faster at 1-8 M elements on an H100
  // (rope_variants_bench), equal above; 64-bit only for launches of 2^32 threads or more.
  if (p.total_threads <= std::int64_t(std::numeric_limits<std::uint32_t>::max())) {
    rope_kernel<T, TT, kStyle, kFused, EV, kUnroll, kBlocks, true>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, inv);
  } else {
    rope_kernel<T, TT, kStyle, kFused, EV, kUnroll, kBlocks, false>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, inv);
  }
  FK_CHECK_LAUNCH();
}

template <typename T, typename TT, bool kFused, typename Inv>
void launch(const Params& p, const Inv& inv, RopeStyle style, bool inplace, cudaStream_t stream) {
  constexpr int kVec = kVectorBytes / sizeof(T);
  const bool vec = can_vectorize<T>(p, style, !kFused);
  if (style == RopeStyle::kNeox) {
    if (vec) launch_with<T, TT, kFused, RopeStyle::kNeox, kVec>(p, inv, inplace, stream);
    else launch_with<T, TT, kFused, RopeStyle::kNeox, 1>(p, inv, inplace, stream);
  } else {
    if (vec) launch_with<T, TT, kFused, RopeStyle::kGptj, kVec>(p, inv, inplace, stream);
    else launch_with<T, TT, kFused, RopeStyle::kGptj, 2>(p, inv, inplace, stream);
  }
}

// Validation shared by both variants (shapes, pointers, alignment, q/k overlap); returns false
// when there is nothing to do.
bool check_common(const char* op, const RopeTensor& q, const RopeTensor& k, const RopeShape& shape,
                  RopeStyle style, const RopePositions& positions, DType dtype);

// inv_freq[i] = float(base ** (-2i / rotary_dim)), computed in double and rounded once.
InvFreq inv_freq(double base, std::int64_t rotary_dim);

Params make_params(const RopeTensor& q, const RopeTensor& k, const RopeShape& shape, const RopePositions& pos);

}  // namespace flashkernel::rope_detail

namespace flashkernel::rope_detail {

// Table launches, split by table dtype across two translation units to keep compile time down:
// float32 tables (any q dtype) and tables of q's own 16-bit dtype.
void launch_table_f32(const Params& p, RopeStyle style, bool inplace, DType dtype, cudaStream_t stream);
void launch_table_same(const Params& p, RopeStyle style, bool inplace, DType dtype, cudaStream_t stream);

}  // namespace flashkernel::rope_detail
