// Split-KV (flash-decoding) attention for one query token per sequence, reading K/V through the
// page table. Included by the per-dtype instantiation files only (keeps each compile unit small).
//
// Grid (num_splits, num_kv_heads * head_chunks, batch); 128 threads. A CTA owns one KV head of one
// sequence, one token range (split) and up to G query heads of that KV head's GQA group, so each
// K/V byte is read once for the whole group. Inside the CTA a head_dim row (16-byte vectors) is
// spread over D/8 lanes; a warp covers 32/(D/8) rows side by side and kUnroll rows per lane per
// iteration, issuing all K and V loads of an iteration before any math (2 x kUnroll independent
// 16-byte loads per lane in flight hide HBM latency without shared-memory staging). Scores are
// reduced across the row's lanes with shuffles; each lane keeps an online-softmax state for its
// D/8-wide column slice; states merge across row slots (shuffles), warps (shared memory), and
// splits (the combine kernel, by log-sum-exp).
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/dtype_traits.cuh"
#include "common/online_softmax.cuh"
#include "common/vector_io.cuh"

namespace flashkernel::kv_decode {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 4;

struct Params {
  const void* q;        // [batch, num_q_heads, D]
  void* out;            // [batch, num_q_heads, D]
  float* part_o;        // [batch, num_q_heads, num_splits, D] (only when num_splits > 1)
  float* part_lse;      // [batch, num_q_heads, num_splits], base 2
  const void* pool;     // this layer's pages: [num_pages, 2, num_kv_heads, page_size, D]
  std::int64_t page_elems;
  int num_kv_heads;
  int page_size_log2;
  const std::int32_t* page_table;  // [batch, max_pages]
  int max_pages;
  const std::int32_t* seq_lens;    // [batch]
  int num_q_heads;
  int group;        // q heads per kv head
  int head_chunks;  // ceil(group / G)
  int num_splits;
  int split_tokens;  // tokens per split (the last split also takes any remainder)
  float scale_log2;  // softmax scale * log2(e)
};

// Tokens one CTA covers per loop iteration (split sizes are multiples of the largest of these).
template <int D>
constexpr int tokens_per_iteration() {
  return kWarps * (32 / (D / 8)) * kUnroll;
}

template <typename T, int D, int G>
__global__ void __launch_bounds__(kThreads) paged_decode_kernel(Params p) {
  constexpr int kVec = 8;                    // elements per 16-byte vector
  constexpr int kLanesPerRow = D / kVec;     // 8 (d=64) or 16 (d=128)
  constexpr int kRowsPerWarp = 32 / kLanesPerRow;
  constexpr int kWarpTokens = kRowsPerWarp * kUnroll;
  constexpr int kCtaTokens = kWarps * kWarpTokens;

  const int b = blockIdx.z;
  const int hk = blockIdx.y / p.head_chunks, hc = blockIdx.y % p.head_chunks;
  const int split = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = lane % kLanesPerRow, row = lane / kLanesPerRow;

  const int len = p.seq_lens[b];
  const int start = split * p.split_tokens;
  const int end = split == p.num_splits - 1 ? len : min(len, start + p.split_tokens);

  // Query slice of each head this CTA serves, pre-scaled so scores come out in log2 units.
  float qf[G][kVec];
  bool head_ok[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int gi = hc * G + g;
    head_ok[g] = gi < p.group;
    const int hq = hk * p.group + (head_ok[g] ? gi : 0);
    Vec<T> qv = load_vec(static_cast<const T*>(p.q) + (std::int64_t(b) * p.num_q_heads + hq) * D + col * kVec);
#pragma unroll
    for (int i = 0; i < kVec; ++i) qf[g][i] = head_ok[g] ? to_float(qv.v[i]) * p.scale_log2 : 0.f;
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

  for (int base = start + warp * kWarpTokens; base < end; base += kCtaTokens) {
    Vec<T> kv[kUnroll], vv[kUnroll];
    bool ok[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int tok = base + u * kRowsPerWarp + row;
      ok[u] = tok < end;
      if (ok[u]) {
        const std::int64_t page = table[tok >> p.page_size_log2];
        const T* kp = pool + page * p.page_elems + k_head_off + std::int64_t(tok & page_mask) * D;
        kv[u] = load_vec_stream(kp);
        vv[u] = load_vec_stream(kp + v_off);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) kv[u].v[i] = vv[u].v[i] = from_float<T>(0.f);
      }
    }
    float s[kUnroll][G];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) kf[i] = to_float(kv[u].v[i]);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < kVec; ++i) d = fmaf(qf[g][i], kf[i], d);
#pragma unroll
        for (int off = kLanesPerRow / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffffu, d, off);
        s[u][g] = ok[u] ? d : softmax::kNegInf;
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float bm = s[0][g];
#pragma unroll
      for (int u = 1; u < kUnroll; ++u) bm = fmaxf(bm, s[u][g]);
      const float f = softmax::advance_max(m[g], l[g], bm);
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[g][i] *= f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float vf[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) vf[i] = to_float(vv[u].v[i]);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        // A masked token has s = -inf; with m = -inf too (nothing seen yet) exp2 would give NaN.
        const float w = ok[u] ? exp2f(s[u][g] - m[g]) : 0.f;
        l[g] += w;
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[g][i] = fmaf(w, vf[i], acc[g][i]);
      }
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
    const int hq = hk * p.group + hc * G + g;
    const float val = ll > 0.f ? o / ll : 0.f;
    const std::int64_t bh = std::int64_t(b) * p.num_q_heads + hq;
    if (p.num_splits == 1) {
      static_cast<T*>(p.out)[bh * D + c] = from_float<T>(val);
    } else {
      p.part_o[(bh * p.num_splits + split) * D + c] = val;
      if (c == 0) p.part_lse[bh * p.num_splits + split] = softmax::log_sum_exp2(mm, ll);
    }
  }
}

template <typename T, int D, int G>
void launch_paged_decode(const Params& p, dim3 grid, cudaStream_t stream) {
  paged_decode_kernel<T, D, G><<<grid, kThreads, 0, stream>>>(p);
}

// Launches the kernel for head_dim 64/128 and G in {1, 2, 4, 8}. One overload per element type
// (the pointer argument only selects it), each defined in its own paged_decode_<dtype>.cu.
void launch_paged_decode_dtype(const Params& p, const __half* tag, int head_dim, int g, dim3 grid,
                               cudaStream_t stream);
void launch_paged_decode_dtype(const Params& p, const __nv_bfloat16* tag, int head_dim, int g, dim3 grid,
                               cudaStream_t stream);

#define FLASHKERNEL_DEFINE_PAGED_DECODE(T)                                                              \
  void launch_paged_decode_dtype(const Params& p, const T*, int head_dim, int g, dim3 grid,             \
                                 cudaStream_t stream) {                                                 \
    auto by_g = [&](auto d_tag) {                                                                       \
      constexpr int kD = decltype(d_tag)::value;                                                        \
      switch (g) {                                                                                      \
        case 1: return launch_paged_decode<T, kD, 1>(p, grid, stream);                                  \
        case 2: return launch_paged_decode<T, kD, 2>(p, grid, stream);                                  \
        case 4: return launch_paged_decode<T, kD, 4>(p, grid, stream);                                  \
        default: return launch_paged_decode<T, kD, 8>(p, grid, stream);                                 \
      }                                                                                                 \
    };                                                                                                  \
    if (head_dim == 64) {                                                                               \
      by_g(std::integral_constant<int, 64>{});                                                          \
    } else {                                                                                            \
      by_g(std::integral_constant<int, 128>{});                                                         \
    }                                                                                                   \
  }

}  // namespace flashkernel::kv_decode
