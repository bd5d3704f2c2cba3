// Split-KV (flash-decoding) attention for one query token per sequence, reading K/V through the
// page table. Included by the per-dtype instantiation files only (keeps each compile unit small).
//
// Grid (num_splits, num_kv_heads * head_chunks, batch); 128 threads. A CTA owns one KV head of one
// sequence, one token range (split) and up to G query heads of that KV head's GQA group, so each
// K/V byte is read once for the whole group. CUDA-core kernel: inside the CTA a head_dim row
// (16-byte vectors) is spread over D/8 lanes; a warp covers 32/(D/8) rows side by side and U rows
// per lane per iteration, issuing all K and V loads of an iteration before any math (2 x U
// independent 16-byte loads per lane in flight hide HBM latency without shared-memory staging).
// The tensor-core kernel for larger GQA groups is further down. Scores are
// reduced across the row's lanes with shuffles; each lane keeps an online-softmax state for its
// D/8-wide column slice; states merge across row slots (shuffles), warps (shared memory), and
// splits (the combine kernel, by log-sum-exp).
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/cp_async.cuh"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/fp8.cuh"
#include "common/index_guard.cuh"
#include "common/mma_sm80.cuh"
#include "common/online_softmax.cuh"
#include "common/vector_io.cuh"
#include "flashkernel/kv_cache.h"

namespace flashkernel::kv_decode {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

struct Params {
  const void* q;        // [batch, num_q_heads, D]
  void* out;            // [batch, num_q_heads, D]
  float* part_o;        // [batch, num_q_heads, num_splits, D] (only when num_splits > 1)
  float* part_lse;      // [batch, num_q_heads, num_splits], base 2
  const void* pool;     // this layer's pages: [num_pages, 2, num_kv_heads, page_size, D]
  std::int64_t page_elems;
  int num_kv_heads;
  int page_size_log2;
  const std::int32_t* page_table;  // [batch, max_pages], entries in [0, num_pages) (checked)
  int max_pages;
  int num_pages;
  const std::int32_t* seq_lens;    // [batch], each in [1, max_pages * page_size] (checked)
  std::int32_t* error_flag;        // KVIndexFault bits, or nullptr
  int num_q_heads;
  int group;        // q heads per kv head
  int head_chunks;  // ceil(group / G)
  int num_splits;
  int split_tokens;  // tokens per split (the last split also takes any remainder)
  float scale_log2;  // softmax scale * log2(e)
  // A float8 pool's scales of this layer, [num_kv_heads] each; null for a 16-bit pool (scale 1).
  // The kernels compute on the raw e4m3 values: k_scale multiplies scale_log2, v_scale the output.
  const float* k_scale;
  const float* v_scale;
};

// Writes column c of query head hq's result: the output itself when the context is not split,
// else the split's normalized partial output and (column 0) its log2-sum-exp2.
template <typename T, int D>
__device__ __forceinline__ void store_result(const Params& p, int b, int hq, int split, int c, float val, float lse) {
  const std::int64_t bh = std::int64_t(b) * p.num_q_heads + hq;
  if (p.num_splits == 1) {
    static_cast<T*>(p.out)[bh * D + c] = from_float<T>(val);
  } else {
    p.part_o[(bh * p.num_splits + split) * D + c] = val;
    if (c == 0) p.part_lse[bh * p.num_splits + split] = lse;
  }
}

// Merges the per-warp states in shared memory and writes this CTA's result: the output itself
// when the context is not split, else the split's normalized partial output and log2-sum-exp2.
template <typename T, int D, int G>
__device__ __forceinline__ void finish_cta(const Params& p, const float (&sm_m)[kWarps][G],
                                           const float (&sm_l)[kWarps][G], const float (&sm_acc)[kWarps][G][D],
                                           int b, int hk, int hc, int split) {
  const float v_scale = fp8::head_scale(p.v_scale, hk);
  for (int idx = threadIdx.x; idx < G * D; idx += kThreads) {
    const int g = idx / D, c = idx % D;
    if (hc * G + g >= p.group) continue;
    float mm = softmax::kNegInf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm_m[w][g]);
    float ll = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = softmax::rescale_factor(sm_m[w][g], mm);
      ll += sm_l[w][g] * f;
      o += sm_acc[w][g][c] * f;
    }
    store_result<T, D>(p, b, hk * p.group + hc * G + g, split, c, ll > 0.f ? o / ll * v_scale : 0.f,
                       softmax::log_sum_exp2(mm, ll));
  }
}

// The token range [start, end) this CTA attends over, after checking the device-side indices it
// depends on: seq_lens[b] in [1, max_pages * page_size], and every page-table entry of the range
// in [0, num_pages). When one is out of range the CTA must not use it as an address: it records
// the fault, writes NaN for its heads (a NaN partial log-sum-exp makes the combine's output NaN
// too) and returns false. seq_lens[b] is the same for the whole CTA, so every thread reaches the
// barrier or none does.
template <typename T, int D, int G>
__device__ __forceinline__ bool cta_token_range(const Params& p, int b, int hk, int hc, int split, int& start,
                                                int& end) {
  const int len = p.seq_lens[b];
  std::int32_t fault = 0;
  if (len < 1 || std::int64_t(len) > (std::int64_t(p.max_pages) << p.page_size_log2)) {
    fault = kKVFaultSeqLens;
  } else {
    start = split * p.split_tokens;
    end = split == p.num_splits - 1 ? len : min(len, start + p.split_tokens);
    const std::int32_t* row = p.page_table + std::int64_t(b) * p.max_pages;
    bool bad = false;
    if (start < end) {
      for (int i = (start >> p.page_size_log2) + int(threadIdx.x); i <= ((end - 1) >> p.page_size_log2); i += kThreads) {
        bad |= !detail::index_in_range(row[i], p.num_pages);
      }
    }
    if (__syncthreads_or(bad)) fault = kKVFaultPageTable;
  }
  if (fault == 0) return true;
  if (threadIdx.x == 0) detail::record_index_fault(p.error_flag, fault);
  const float nan = __int_as_float(0x7fffffff);
  for (int idx = threadIdx.x; idx < G * D; idx += kThreads) {
    const int g = idx / D, c = idx % D;
    if (hc * G + g < p.group) store_result<T, D>(p, b, hk * p.group + hc * G + g, split, c, nan, nan);
  }
  return false;
}

template <typename T, int D, int G, int U, bool kPrefetch>
__global__ void __launch_bounds__(kThreads) paged_decode_kernel(Params p) {
  pdl::allow_dependents();  // the split combine may be scheduled (it waits for this grid)
  pdl::wait_for_prior_grid();  // launched as a dependent (pdl::launch): q, the cache and seq_lens are ready after this
  constexpr int kVec = 8;                    // elements per 16-byte vector
  constexpr int kLanesPerRow = D / kVec;     // 8 (d=64) or 16 (d=128)
  constexpr int kRowsPerWarp = 32 / kLanesPerRow;
  constexpr int kWarpTokens = kRowsPerWarp * U;
  constexpr int kCtaTokens = kWarps * kWarpTokens;

  const int b = blockIdx.z;
  const int hk = blockIdx.y / p.head_chunks, hc = blockIdx.y % p.head_chunks;
  const int split = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = lane % kLanesPerRow, row = lane / kLanesPerRow;

  int start = 0, end = 0;
  if (!cta_token_range<T, D, G>(p, b, hk, hc, split, start, end)) return;

  // Query slice of each head this CTA serves, pre-scaled so scores come out in log2 units.
  float qf[G][kVec];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int gi = hc * G + g;
    const bool head_ok = gi < p.group;
    const int hq = hk * p.group + (head_ok ? gi : 0);
    Vec<T> qv = load_vec(static_cast<const T*>(p.q) + (std::int64_t(b) * p.num_q_heads + hq) * D + col * kVec);
#pragma unroll
    for (int i = 0; i < kVec; ++i) qf[g][i] = head_ok ? to_float(qv.v[i]) * p.scale_log2 : 0.f;
  }

  float m[G], l[G], acc[G][kVec];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = softmax::kNegInf;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[g][i] = 0.f;
  }

  const T* pool = static_cast<const T*>(p.pool);
  const std::int32_t* table = p.page_table + std::int64_t(b) * p.max_pages;
  const int page_mask = (1 << p.page_size_log2) - 1;
  // Offsets inside a page of this head's K slab and of the V slab (V follows all K heads).
  const std::int64_t k_head_off = (std::int64_t(hk) << p.page_size_log2) * D + col * kVec;
  const std::int64_t v_off = (std::int64_t(p.num_kv_heads) << p.page_size_log2) * D;

  // A tile: this lane's U rows of K and V starting at token `base` of its warp's row block.
  struct Tile {
    Vec<T> k[U], v[U];
    bool ok[U];
  };
  auto load_tile = [&](Tile& t, int base) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int tok = base + u * kRowsPerWarp + row;
      t.ok[u] = tok < end;
      if (t.ok[u]) {
        const std::int64_t page = table[tok >> p.page_size_log2];
        const T* kp = pool + page * p.page_elems + k_head_off + std::int64_t(tok & page_mask) * D;
        t.k[u] = load_vec_stream(kp);
        t.v[u] = load_vec_stream(kp + v_off);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) t.k[u].v[i] = t.v[u].v[i] = from_float<T>(0.f);
      }
    }
  };
  auto consume = [&](const Tile& t) {
    float s[U][G];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) kf[i] = to_float(t.k[u].v[i]);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < kVec; ++i) d = fmaf(qf[g][i], kf[i], d);
#pragma unroll
        for (int off = kLanesPerRow / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffffu, d, off);
        s[u][g] = t.ok[u] ? d : softmax::kNegInf;
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float bm = s[0][g];
#pragma unroll
      for (int u = 1; u < U; ++u) bm = fmaxf(bm, s[u][g]);
      const float f = softmax::advance_max(m[g], l[g], bm);
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[g][i] *= f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) vf[i] = to_float(t.v[u].v[i]);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        // A masked token has s = -inf; with m = -inf too (nothing seen yet) exp2 would give NaN.
        const float w = t.ok[u] ? exp2f(s[u][g] - m[g]) : 0.f;
        l[g] += w;
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[g][i] = fmaf(w, vf[i], acc[g][i]);
      }
    }
  };

  int base = start + warp * kWarpTokens;
  if constexpr (kPrefetch) {
    // Two register tiles in ping-pong: the next tile's loads are in flight while this one is
    // consumed (no register copies, which would wait on the pending loads).
    Tile a, c;
    if (base < end) load_tile(a, base);
    while (base < end) {
      if (base + kCtaTokens < end) load_tile(c, base + kCtaTokens);
      consume(a);
      base += kCtaTokens;
      if (base >= end) break;
      if (base + kCtaTokens < end) load_tile(a, base + kCtaTokens);
      consume(c);
      base += kCtaTokens;
    }
  } else {
    for (; base < end; base += kCtaTokens) {
      Tile a;
      load_tile(a, base);
      consume(a);
    }
  }

  // Merge the row slots of the warp (lanes with the same col hold the same column slice).
#pragma unroll
  for (int off = kLanesPerRow; off < 32; off *= 2) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float acc_o[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc_o[i] = __shfl_xor_sync(0xffffffffu, acc[g][i], off);
      const float m_o = __shfl_xor_sync(0xffffffffu, m[g], off);
      const float l_o = __shfl_xor_sync(0xffffffffu, l[g], off);
      softmax::merge(m[g], l[g], acc[g], m_o, l_o, acc_o);
    }
  }

  __shared__ float sm_m[kWarps][G], sm_l[kWarps][G];
  __shared__ float sm_acc[kWarps][G][D];
  if (row == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (col == 0) {
        sm_m[warp][g] = m[g];
        sm_l[warp][g] = l[g];
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) sm_acc[warp][g][col * kVec + i] = acc[g][i];
    }
  }
  __syncthreads();
  finish_cta<T, D, G>(p, sm_m, sm_l, sm_acc, b, hk, hc, split);
}

// ----------------------------------------------------------------------------- tensor-core path
// For GQA groups of 4-8 query heads the CUDA-core loop above is instruction-bound (every K/V
// element is converted and multiplied once per head, and every score is shuffle-reduced). Here a
// warp takes 16 tokens per step and does both products with mma.sync m16n8k16 (fp32 accumulate):
//   S = Q K^T : A = Q (the group's heads as rows: up to 16; with 8 or fewer, rows 8..15 are
//               zero), B = K^T (8 tokens);
//   O += P V  : A = P (heads x 16 tokens, packed from S's accumulators), B = V (16 tokens x 8 cols).
// No shared-memory staging: each lane loads its fragments straight from the pages with 16-byte
// loads. That works because a dot product does not care about the order of d: lane (g, t) loads
// K[token g][32j + 8t .. +7] and Q[head g][32j + 8t .. +7], whose 4 element pairs serve as the
// k-pairs {2t, 2t+8} of k-steps 2j and 2j+1 for both operands alike. V needs pairs along tokens,
// so lane (g, t) loads V[tokens 2t, 2t+1, 2t+8, 2t+9][64i + 8g .. +7] and byte-permutes two
// tokens' elements into each B register; output column g of n-tile (i, e) is d = 64i + 8g + e.

// d0, d1 += rows 0..7 of A * B on a 16x8x16 tile whose A rows 8..15 are zero; the result's rows
// 8..15 (zero) go to scratch registers, so no accumulators are kept for them.
template <typename T>
__device__ __forceinline__ void mma_top_rows(float& d0, float& d1, std::uint32_t a0, std::uint32_t a2,
                                             std::uint32_t b0, std::uint32_t b1) {
#if !FK_SM80_AVAILABLE
  // sm_75 (the dispatch takes the CUDA-core variant there, but a compute_75 build running on a
  // newer GPU may take this one): the full-tile wrapper, which is two m16n8k8 for fp16.
  float d[4] = {d0, d1, 0.f, 0.f};
  mma_m16n8k16<T>(d, {a0, 0u, a2, 0u}, {b0, b1});
  d0 = d[0], d1 = d[1];
#else
  float x0, x1;
  if constexpr (std::is_same_v<T, __half>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%10,%11};\n"
        : "+f"(d0), "+f"(d1), "=f"(x0), "=f"(x1)
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(0.f), "f"(0.f));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%10,%11};\n"
        : "+f"(d0), "+f"(d1), "=f"(x0), "=f"(x1)
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(0.f), "f"(0.f));
  }
#endif
}

// A warp's online-softmax state on the tensor-core path, and its 16-token step. Shared by the
// register-loading kernel (paged_decode_mma_kernel) and the shared-memory ring kernel
// (paged_decode_ring_kernel), which differ only in how a step's K/V fragments reach registers.
// Fragments of a step at token `base`, lane (gq, tq):
//   k[h][j] = K[base + 8h + gq][32j + 8tq .. +7]                     (h < 2, j < D/32)
//   v[s][i] = V[base + 8(s >> 1) + 2tq + (s & 1)][64i + 8gq .. +7]    (s < 4, i < D/64)
// Tokens at or past `end` must hold zeros (never a slot's bytes: an unwritten slot may be NaN).
// Where a CTA of the tensor-core kernels works (sequence, KV head, head chunk, split, token range)
// and which mma fragment coordinates (gq, tq) its lane holds.
struct MmaPlace {
  int b, hk, hc, split, warp, lane, gq, tq, start, end;
};

template <typename T, int D, int G>
struct MmaDecodeState {
  static_assert(G <= 16, "one mma row block holds at most 16 heads");
  static constexpr int kRows = G > 8 ? 2 : 1;  // head rows per lane: gq, and gq + 8 when G > 8
  static constexpr int kJ = D / 32;            // K vectors per token per lane
  static constexpr int kI = D / 64;            // V vectors per token per lane
  static constexpr int kTiles = D / 8;         // n-tiles of the output
  static constexpr int kBlock = 16;            // tokens per warp step

  std::uint32_t qa[kRows][kJ][4];
  float m[kRows], l[kRows];
  float acc[kTiles][2 * kRows];  // per n-tile: head gq's two columns, then head gq + 8's

  // d += A * B for this lane's head rows: a[r] = head row r's k-pairs {2tq, 2tq + 8}. With one row
  // the mma's rows 8..15 are zero and their results go to scratch registers.
  __device__ __forceinline__ static void mma(float (&d)[2 * kRows], const std::uint32_t (&a)[kRows][2],
                                             std::uint32_t b0, std::uint32_t b1) {
    if constexpr (kRows == 1) {
      mma_top_rows<T>(d[0], d[1], a[0][0], a[0][1], b0, b1);
    } else {
      const std::uint32_t af[4] = {a[0][0], a[1][0], a[0][1], a[1][1]};
      const std::uint32_t bf[2] = {b0, b1};
      mma_m16n8k16<T>(d, af, bf);
    }
  }

  // Finds the CTA's place and, unless it has no tokens (or met a bad sequence length or page id,
  // reported by cta_token_range) and must exit, loads the query fragments.
  __device__ __forceinline__ bool begin(const Params& p, MmaPlace& at) {
    at.b = blockIdx.z;
    at.hk = blockIdx.y / p.head_chunks;
    at.hc = blockIdx.y % p.head_chunks;
    at.split = blockIdx.x;
    at.warp = threadIdx.x / 32;
    at.lane = threadIdx.x % 32;
    at.gq = at.lane / 4;
    at.tq = at.lane % 4;
    at.start = at.end = 0;
    if (!cta_token_range<T, D, G>(p, at.b, at.hk, at.hc, at.split, at.start, at.end)) return false;
    init(p, at.b, at.hk, at.hc, at.gq, at.tq);
    return true;
  }

  __device__ __forceinline__ void init(const Params& p, int b, int hk, int hc, int gq, int tq) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int head = gq + 8 * r;
      const bool head_ok = head < G && hc * G + head < p.group;
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        Vec<T> v;
        if (head_ok) {
          v = load_vec(static_cast<const T*>(p.q) + (std::int64_t(b) * p.num_q_heads + hk * p.group + hc * G + head) * D +
                       32 * j + 8 * tq);
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) v.v[i] = from_float<T>(0.f);
        }
#pragma unroll
        for (int w = 0; w < 4; ++w) qa[r][j][w] = reinterpret_cast<const std::uint32_t*>(&v)[w];
      }
      m[r] = softmax::kNegInf;
      l[r] = 0.f;
    }
#pragma unroll
    for (int n = 0; n < kTiles; ++n) {
#pragma unroll
      for (int c = 0; c < 2 * kRows; ++c) acc[n][c] = 0.f;
    }
  }

  __device__ __forceinline__ void step(const Vec<T> (&kx)[2][kJ], const Vec<T> (&vx)[4][kI], int base, int end,
                                       float scale_log2, int tq) {
    // Scores of head row r for tokens base + 8h + 2tq + {0, 1}.
    float sc[kRows][2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float d[2 * kRows] = {};
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        const auto* k4 = reinterpret_cast<const std::uint32_t*>(&kx[h][j]);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          std::uint32_t a[kRows][2];
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            a[r][0] = qa[r][j][2 * half];
            a[r][1] = qa[r][j][2 * half + 1];
          }
          mma(d, a, k4[2 * half], k4[2 * half + 1]);
        }
      }
      const int tok = base + 8 * h + 2 * tq;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        sc[r][h][0] = tok < end ? d[2 * r] * scale_log2 : softmax::kNegInf;
        sc[r][h][1] = tok + 1 < end ? d[2 * r + 1] * scale_log2 : softmax::kNegInf;
      }
    }
    std::uint32_t pa[kRows][2];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float mx = fmaxf(fmaxf(sc[r][0][0], sc[r][0][1]), fmaxf(sc[r][1][0], sc[r][1][1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float f = softmax::advance_max(m[r], l[r], mx);
#pragma unroll
      for (int n = 0; n < kTiles; ++n) {
        acc[n][2 * r] *= f;
        acc[n][2 * r + 1] *= f;
      }
      float pr[2][2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          pr[h][c] = sc[r][h][c] == softmax::kNegInf ? 0.f : exp2f(sc[r][h][c] - m[r]);
          l[r] += pr[h][c];
        }
      }
      pa[r][0] = pack_float2<T>(pr[0][0], pr[0][1]);
      pa[r][1] = pack_float2<T>(pr[1][0], pr[1][1]);
    }
#pragma unroll
    for (int i = 0; i < kI; ++i) {
      const auto* v0 = reinterpret_cast<const std::uint32_t*>(&vx[0][i]);
      const auto* v1 = reinterpret_cast<const std::uint32_t*>(&vx[1][i]);
      const auto* v2 = reinterpret_cast<const std::uint32_t*>(&vx[2][i]);
      const auto* v3 = reinterpret_cast<const std::uint32_t*>(&vx[3][i]);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const unsigned sel = (e & 1) ? 0x7632u : 0x5410u;  // high or low 16-bit halves of two words
        const std::uint32_t b0 = __byte_perm(v0[e / 2], v1[e / 2], sel);
        const std::uint32_t b1 = __byte_perm(v2[e / 2], v3[e / 2], sel);
        mma(acc[i * 8 + e], pa, b0, b1);
      }
    }
  }

  // Merges the warps' states through `scratch` (shared memory the caller may reuse: the whole
  // CTA must be past its last read of it) and writes the CTA's result.
  __device__ __forceinline__ void finish(const Params& p, void* scratch, const MmaPlace& at) {
    const int warp = at.warp, gq = at.gq, tq = at.tq;
    struct Merge {
      float m[kWarps][G], l[kWarps][G];
      float acc[kWarps][G][D];
    };
    Merge& sm = *static_cast<Merge*>(scratch);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      // l is a per-lane partial sum over this lane's tokens; the row's other 3 lanes hold the rest.
      float lr = l[r];
      lr += __shfl_xor_sync(0xffffffffu, lr, 1);
      lr += __shfl_xor_sync(0xffffffffu, lr, 2);
      const int head = gq + 8 * r;
      if (head < G) {
        if (tq == 0) {
          sm.m[warp][head] = m[r];
          sm.l[warp][head] = lr;
        }
#pragma unroll
        for (int i = 0; i < kI; ++i) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            sm.acc[warp][head][64 * i + 16 * tq + e] = acc[i * 8 + e][2 * r];
            sm.acc[warp][head][64 * i + 16 * tq + 8 + e] = acc[i * 8 + e][2 * r + 1];
          }
        }
      }
    }
    __syncthreads();
    finish_cta<T, D, G>(p, sm.m, sm.l, sm.acc, at.b, at.hk, at.hc, at.split);
  }
  static constexpr int kMergeBytes = int(sizeof(float)) * kWarps * G * (D + 2);
};

template <typename T, int D, int G>
__global__ void __launch_bounds__(kThreads) paged_decode_mma_kernel(Params p) {
  pdl::allow_dependents();  // the split combine may be scheduled (it waits for this grid)
  pdl::wait_for_prior_grid();  // launched as a dependent (pdl::launch): q, the cache and seq_lens are ready after this
  using State = MmaDecodeState<T, D, G>;
  constexpr int kJ = State::kJ, kI = State::kI, kBlock = State::kBlock;
  constexpr int kCtaTokens = kWarps * kBlock;

  State st;
  MmaPlace at;
  if (!st.begin(p, at)) return;
  const int b = at.b, hk = at.hk, warp = at.warp, gq = at.gq, tq = at.tq, start = at.start, end = at.end;

  const T* pool = static_cast<const T*>(p.pool);
  const std::int32_t* table = p.page_table + std::int64_t(b) * p.max_pages;
  const int page_mask = (1 << p.page_size_log2) - 1;
  const std::int64_t k_head_off = (std::int64_t(hk) << p.page_size_log2) * D;
  const std::int64_t v_off = (std::int64_t(p.num_kv_heads) << p.page_size_log2) * D;
  auto row_ptr = [&](int tok) {
    const std::int64_t page = table[tok >> p.page_size_log2];
    return pool + page * p.page_elems + k_head_off + std::int64_t(tok & page_mask) * D;
  };
  auto zero = [](Vec<T>& v) {
#pragma unroll
    for (int i = 0; i < 8; ++i) v.v[i] = from_float<T>(0.f);
  };

  for (int base = start + warp * kBlock; base < end; base += kCtaTokens) {
    Vec<T> kx[2][kJ], vx[4][kI];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int tok = base + 8 * h + gq;
      if (tok < end) {
        const T* kp = row_ptr(tok);
#pragma unroll
        for (int j = 0; j < kJ; ++j) kx[h][j] = load_vec_stream(kp + 32 * j + 8 * tq);
      } else {
#pragma unroll
        for (int j = 0; j < kJ; ++j) zero(kx[h][j]);
      }
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int tok = base + (s >> 1) * 8 + 2 * tq + (s & 1);
      if (tok < end) {
        const T* vp = row_ptr(tok) + v_off;
#pragma unroll
        for (int i = 0; i < kI; ++i) vx[s][i] = load_vec_stream(vp + 64 * i + 8 * gq);
      } else {
#pragma unroll
        for (int i = 0; i < kI; ++i) zero(vx[s][i]);
      }
    }
    st.step(kx, vx, base, end, p.scale_log2, tq);
  }
  __shared__ __align__(16) char merge[State::kMergeBytes];
  st.finish(p, merge, at);
}

// ----------------------------------------------------------------------------- ring path
// The tensor-core step fed from a shared-memory ring instead of registers: a warp cp.asyncs the
// K and V rows of its next kStages - 1 steps (16 tokens each, 8 KiB at d 128) while it computes
// on the current one, so it keeps up to 16 KiB (3 stages) in flight without holding them in
// registers. The copies are whole rows: a step's 8-token halves are each 8 contiguous rows of
// one page (steps start at multiples of 16 tokens, splits at multiples of 64, pages hold >= 8
// tokens), so every cp.async instruction of the warp reads 512 contiguous bytes. A slot is
// private to its warp: after each lane's cp.async.wait_group a __syncwarp makes every lane's
// copies visible to the others, and the same __syncwarp orders the reads of the step before
// (the slot being refilled) before the refill's writes. Layout of a slot: K rows 0..15 then V
// rows 0..15, each D / 8 16-byte units, unit u of row r stored at u ^ (r & 7): the fragment
// reads (K: rows 8h + gq, units 4j + tq; V: rows 8(s >> 1) + 2tq + (s & 1), units 8i + gq) are
// then conflict-free for V and 2-way for K, and the row writes conflict-free.
// The page ids of the next step to issue are loaded one step ahead, so a copy never waits on a
// page-table read.
//
// FP8 pool (S = __nv_fp8_e4m3, T = the activation type): the same ring holds the e4m3 rows (D
// bytes each, so a step is half the bytes and the same shared memory holds twice the stages),
// and each fragment is widened to T as it is read from the slot (8 bytes -> one Vec<T>, exact),
// so the mma step is the 16-bit one unchanged. The 16-byte unit swizzle then spans the row's
// D / 16 units (u ^ (r & 3) at d 64). The scales never touch the e4m3 values: k scale multiplies
// the softmax scale, v scale the output (finish_cta).
template <typename S, int D>
constexpr int ring_slot_bytes() {
  return 2 * 16 * D * int(sizeof(S));  // K and V rows of one 16-token step
}
template <typename S, int D>
constexpr int ring_bytes(int stages) {
  return kWarps * stages * ring_slot_bytes<S, D>();
}

template <typename T, typename S, int D, int G, int kStages>
__global__ void __launch_bounds__(kThreads) paged_decode_ring_kernel(Params p) {
  pdl::allow_dependents();  // the split combine may be scheduled (it waits for this grid)
  pdl::wait_for_prior_grid();  // launched as a dependent (pdl::launch): q, the cache and seq_lens are ready after this
  static_assert(std::is_same_v<S, T> || std::is_same_v<S, __nv_fp8_e4m3>, "the pool holds T or e4m3");
  using State = MmaDecodeState<T, D, G>;
  constexpr int kJ = State::kJ, kI = State::kI, kBlock = State::kBlock;
  constexpr int kCtaTokens = kWarps * kBlock;
  constexpr int kElemBytes = int(sizeof(S));
  constexpr int kUnitElems = 16 / kElemBytes;                 // pool elements per 16-byte unit
  constexpr int kRowUnits = D / kUnitElems;                   // 16-byte units per row
  constexpr int kSwizzle = (kRowUnits < 8 ? kRowUnits : 8) - 1;
  constexpr int kSlotUnits = ring_slot_bytes<S, D>() / 16;    // 16-byte units per slot
  constexpr int kHalfCopies = 8 * kRowUnits / 32;             // warp copies per 8-row half
  static_assert(kHalfCopies >= 1, "a warp copy covers at most one 8-row half");
  static_assert(ring_bytes<S, D>(kStages) >= State::kMergeBytes, "the merge reuses the ring");
  extern __shared__ uint4 ring[];

  State st;
  MmaPlace at;
  if (!st.begin(p, at)) return;
  const int b = at.b, hk = at.hk, warp = at.warp, lane = at.lane, gq = at.gq, tq = at.tq, start = at.start, end = at.end;

  const S* pool = static_cast<const S*>(p.pool);
  const std::int32_t* table = p.page_table + std::int64_t(b) * p.max_pages;
  const int page_mask = (1 << p.page_size_log2) - 1;
  const S* k_base = pool + (std::int64_t(hk) << p.page_size_log2) * D;
  const std::int64_t v_off = (std::int64_t(p.num_kv_heads) << p.page_size_log2) * D;
  const int first = start + warp * kBlock;
  const int steps = first < end ? (end - first + kCtaTokens - 1) / kCtaTokens : 0;
  const float scale_log2 = p.scale_log2 * fp8::head_scale(p.k_scale, hk);
  uint4* slots = ring + warp * kStages * kSlotUnits;
  auto unit_at = [](int row, int unit) { return row * kRowUnits + (unit ^ (row & kSwizzle)); };
  // The 8 elements [elem, elem + 8) of slot row `row` as a Vec<T> (elem a multiple of 8).
  auto fragment = [&](const uint4* slot, int row, int elem) {
    const int byte = elem * kElemBytes;
    const auto* unit = reinterpret_cast<const char*>(slot + unit_at(row, byte / 16)) + byte % 16;
    if constexpr (std::is_same_v<S, T>) {
      return *reinterpret_cast<const Vec<T>*>(unit);
    } else {
      return fp8::widen8<T>(*reinterpret_cast<const uint2*>(unit));
    }
  };

  // Page ids of step `it`'s two halves; a half at or past `end` gets page 0 (its copies
  // zero-fill and read nothing) so no table entry outside the checked range is read.
  auto pages_of = [&](int it, std::int64_t (&pg)[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int tok0 = first + it * kCtaTokens + 8 * h;
      pg[h] = it < steps && tok0 < end ? table[tok0 >> p.page_size_log2] : 0;
    }
  };
  auto issue = [&](int it, const std::int64_t (&pg)[2]) {
    const int base = first + it * kCtaTokens;
    uint4* slot = slots + (it % kStages) * kSlotUnits;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const S* k_rows = k_base + pg[h] * p.page_elems + std::int64_t((base + 8 * h) & page_mask) * D;
#pragma unroll
      for (int c = 0; c < kHalfCopies; ++c) {
        const int unit = c * 32 + lane;  // of the half's 8 rows, row-major
        const int row = 8 * h + unit / kRowUnits, u = unit % kRowUnits;
        const bool ok = base + row < end;
        cp_async_16(slot + unit_at(row, u), k_rows + unit * kUnitElems, ok);
        cp_async_16(slot + 16 * kRowUnits + unit_at(row, u), k_rows + v_off + unit * kUnitElems, ok);
      }
    }
  };

  std::int64_t pg[2], next_pg[2];
  pages_of(0, pg);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) {
      pages_of(s + 1, next_pg);
      issue(s, pg);
      pg[0] = next_pg[0];
      pg[1] = next_pg[1];
    }
    cp_async_commit();
  }
  for (int it = 0; it < steps; ++it) {
    cp_async_wait<kStages - 2>();  // this lane's copies of step `it` have landed ...
    __syncwarp();                  // ... and every lane's; every lane is done reading step it - 1
    const int ahead = it + kStages - 1;
    if (ahead < steps) {
      pages_of(ahead + 1, next_pg);
      issue(ahead, pg);  // into the slot step it - 1 used
      pg[0] = next_pg[0];
      pg[1] = next_pg[1];
    }
    cp_async_commit();
    const uint4* slot = slots + (it % kStages) * kSlotUnits;
    Vec<T> kx[2][kJ], vx[4][kI];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int j = 0; j < kJ; ++j) kx[h][j] = fragment(slot, 8 * h + gq, 32 * j + 8 * tq);
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
#pragma unroll
      for (int i = 0; i < kI; ++i) {
        vx[s][i] = fragment(slot + 16 * kRowUnits, 8 * (s >> 1) + 2 * tq + (s & 1), 64 * i + 8 * gq);
      }
    }
    st.step(kx, vx, first + it * kCtaTokens, end, scale_log2, tq);
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is past its last ring read: the merge may reuse the ring
  st.finish(p, ring, at);
}

// Variants selectable for experiments (PagedDecodeVariant; the launcher's automatic choice is
// what the library uses): 0: CUDA cores, 4 rows per lane per iteration, loads then math; 1: 2
// rows, next tile prefetched; 2: 4 rows, prefetched; 3: tensor cores, fragments loaded into
// registers, for groups of 4-8 heads (else 0); 4 / 5: tensor cores fed by the shared-memory ring
// (ring_stages: deep / 2 stages), every group size. A float8 pool: variants 4 and 5 only.
constexpr int kNumVariants = 6;

// Variants 4 and 5 feed the tensor cores from the shared-memory ring (and hold groups of 16 heads);
// they are also the only ones that read a float8 pool.
constexpr bool is_ring_variant(int variant) { return variant == 4 || variant == 5; }

// Ring depth of variants 4 and 5: 3 stages at d 128 (96 KiB, 2 CTAs per H100 SM), 4 at d 64 (64 KiB);
// variant 5: 2. An FP8 pool's steps are half the bytes: twice the stages in the same shared memory.
constexpr int ring_stages(int variant, int head_dim, int elem_bytes) {
  return (variant == 5 ? 2 : head_dim == 128 ? 3 : 4) * (2 / elem_bytes);
}

// Dynamic shared memory of a variant's kernel (0 unless it is a ring variant).
template <typename S>
int dynamic_smem_bytes(int variant, int head_dim) {
  if (!is_ring_variant(variant)) return 0;
  const int stages = ring_stages(variant, head_dim, int(sizeof(S)));
  return head_dim == 128 ? ring_bytes<S, 128>(stages) : ring_bytes<S, 64>(stages);
}

// Launches one kernel (occupancy == nullptr) or reports its resident CTAs per SM.
template <auto kernel>
void launch_or_query(const Params& p, dim3 grid, int smem, cudaStream_t stream, int* occupancy) {
  if (smem > 48 * 1024) detail::ensure_smem_opt_in<kernel>(smem);
  if (occupancy) {
    // A failed query must surface here (and be consumed), not as a later launch's error.
    FK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(occupancy, kernel, kThreads, smem));
  } else {
    pdl::launch(kernel, grid, dim3(kThreads), smem, stream, p);
  }
}

// T: the q/out type; S: the pool's element type (T, or __nv_fp8_e4m3, read by the ring variants
// only: the launcher refuses the others before it gets here).
template <typename T, typename S, int D, int G>
void launch_paged_decode(const Params& p, int variant, dim3 grid, cudaStream_t stream, int* occupancy) {
  constexpr int kBytes = int(sizeof(S));
  const int smem = dynamic_smem_bytes<S>(variant, D);
  if constexpr (std::is_same_v<S, T>) {
    if (!is_ring_variant(variant)) {
      if constexpr (G > 8) {
        // Only the tensor-core kernels hold 16 heads (make_plan gives the CUDA-core variants 8).
        return launch_or_query<paged_decode_mma_kernel<T, D, G>>(p, grid, smem, stream, occupancy);
      } else {
        if constexpr (G >= 4) {
          if (variant == 3) return launch_or_query<paged_decode_mma_kernel<T, D, G>>(p, grid, smem, stream, occupancy);
        }
        switch (variant) {
          case 1: return launch_or_query<paged_decode_kernel<T, D, G, 2, true>>(p, grid, smem, stream, occupancy);
          case 2: return launch_or_query<paged_decode_kernel<T, D, G, 4, true>>(p, grid, smem, stream, occupancy);
          default: return launch_or_query<paged_decode_kernel<T, D, G, 4, false>>(p, grid, smem, stream, occupancy);
        }
      }
    }
  }
  if (variant == 5) {
    return launch_or_query<paged_decode_ring_kernel<T, S, D, G, ring_stages(5, D, kBytes)>>(p, grid, smem, stream,
                                                                                           occupancy);
  }
  return launch_or_query<paged_decode_ring_kernel<T, S, D, G, ring_stages(4, D, kBytes)>>(p, grid, smem, stream,
                                                                                         occupancy);
}

// Launches the kernel (occupancy == nullptr) or reports its resident CTAs per SM, for head_dim
// 64/128 and G in {1, 2, 4, 8, 16} (16: tensor-core variants 3-5 only).
template <typename T, typename S>
void launch_paged_decode_shape(const Params& p, int head_dim, int g, int variant, dim3 grid, cudaStream_t stream,
                               int* occupancy) {
  auto by_g = [&](auto d_tag) {
    constexpr int kD = decltype(d_tag)::value;
    switch (g) {
      case 1: return launch_paged_decode<T, S, kD, 1>(p, variant, grid, stream, occupancy);
      case 2: return launch_paged_decode<T, S, kD, 2>(p, variant, grid, stream, occupancy);
      case 4: return launch_paged_decode<T, S, kD, 4>(p, variant, grid, stream, occupancy);
      case 8: return launch_paged_decode<T, S, kD, 8>(p, variant, grid, stream, occupancy);
      default: return launch_paged_decode<T, S, kD, 16>(p, variant, grid, stream, occupancy);
    }
  };
  if (head_dim == 64) {
    by_g(std::integral_constant<int, 64>{});
  } else {
    by_g(std::integral_constant<int, 128>{});
  }
}

// One overload per (q/out type, pool element type) (the pointer arguments only select it), each
// defined in its own paged_decode_<dtype>.cu so the instantiations compile in parallel.
#define FLASHKERNEL_DECLARE_PAGED_DECODE(T, S)                                                               \
  void launch_paged_decode_dtype(const Params& p, const T*, const S*, int head_dim, int g, int variant, dim3 grid, \
                                 cudaStream_t stream, int* occupancy = nullptr)
FLASHKERNEL_DECLARE_PAGED_DECODE(__half, __half);
FLASHKERNEL_DECLARE_PAGED_DECODE(__nv_bfloat16, __nv_bfloat16);
FLASHKERNEL_DECLARE_PAGED_DECODE(__half, __nv_fp8_e4m3);
FLASHKERNEL_DECLARE_PAGED_DECODE(__nv_bfloat16, __nv_fp8_e4m3);

#define FLASHKERNEL_DEFINE_PAGED_DECODE(T, S)                                                               \
  void launch_paged_decode_dtype(const Params& p, const T*, const S*, int head_dim, int g, int variant, dim3 grid, \
                                 cudaStream_t stream, int* occupancy) {                                        \
    launch_paged_decode_shape<T, S>(p, head_dim, g, variant, grid, stream, occupancy);                         \
  }

}  // namespace flashkernel::kv_decode
