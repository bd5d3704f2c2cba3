// The per-tile math shared by the FlashAttention forward kernels (sm80 mma.sync and sm90 wgmma):
// masking a score tile, the online-softmax update of the running row max/sum with the rescale of
// the output accumulator, and the epilogue (O / l and the log-sum-exp).
//
// Both kernels hold scores and outputs in the same register layout: the mma/wgmma C fragment of
// 16-row tiles. For a thread with g = lane / 4 and t = lane % 4, element [mi][j][e] of a
// [kMTiles][N / 8][4] array is (row mi * 16 + g + 8 * (e >= 2), column j * 8 + 2 * t + (e & 1)),
// rows relative to the warp's first row. A row's statistics live in the 4 lanes of one quad.
//
// The softmax is online_softmax.cuh's, in its vocabulary (base 2, kLog2e folded into the scale,
// kNegInf for an empty row): RowStats holds each row's (m, l), softmax_tile is advance_max over a
// whole tile (with fast_exp2 and a rescale that is skipped where no max moved), finish_output's
// lse is log_sum_exp2 * kLn2.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/activations.cuh"  // fast_exp2
#include "common/mma_sm80.cuh"     // pack_float2
#include "common/online_softmax.cuh"

namespace flashkernel::attention {

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The softmax scale in the base-2 domain, for a scale >= 0: the kernels fold a negative scale's
// sign into the scores themselves (sm90: the S wgmma negates Q; sm80: Q is negated in shared
// memory), so the softmax needs only a row max, never a min. A scale below FLT_MIN (0 included) is
// raised to FLT_MIN: every scaled score then rounds to 0 exactly as it would, while a masked -inf
// score still gives exp2(-inf) = 0 instead of 0 * inf = NaN.
struct SoftmaxScale {
  float scale_log2;
  static constexpr float masked = softmax::kNegInf;  // what a masked score becomes: it loses the max
  __device__ __forceinline__ explicit SoftmaxScale(float abs_scale)
      : scale_log2(fmaxf(abs_scale * softmax::kLog2e, 1.17549435e-38f)) {}
};

// Running statistics of a thread's rows (g and g + 8 of each 16-row tile) in the log2 domain of
// scaled scores. row_sum is this lane's partial sum; the quad adds them up in the epilogue.
template <int kMTiles>
struct RowStats {
  float max[kMTiles][2];
  float sum[kMTiles][2];
  __device__ __forceinline__ RowStats() {
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
      for (int r = 0; r < 2; ++r) max[mi][r] = softmax::kNegInf, sum[mi][r] = 0.f;
  }
};

// Whether the key tile [col0, col0 + kBlockN) needs per-element masking for query rows
// [row0, row0 + rows): the Nk tail, or (causal) keys past a row's diagonal row + diag.
template <int kBlockN>
__device__ __forceinline__ bool tile_needs_mask(int col0, int row0, int seq_k, bool causal, int diag) {
  return (col0 + kBlockN > seq_k) || (causal && col0 + kBlockN - 1 > row0 + diag);
}

// Varlen: sequence b's rows in a packed tensor, from cu_seqlens: returns its length and sets
// `first` to its first row. Offsets are clamped into [0, total] and the length to max_len, so no
// cu_seqlens value can move an access outside the tensor (a decreasing pair is an empty sequence).
__device__ __forceinline__ int varlen_sequence(const std::int32_t* cu_seqlens, int b, int total, int max_len,
                                               int& first) {
  first = min(max(cu_seqlens[b], 0), total);
  return max(0, min(min(cu_seqlens[b + 1], total) - first, max_len));
}

// Replaces masked scores: columns at or past seq_k and (causal) columns past row + diag, where
// row = row0 + [the element's row in the fragment] and col = col0 + [its column].
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void mask_tile(float (&s)[kMTiles][kNTiles][4], int row0, int col0, int seq_k, bool causal,
                                          int diag, float masked) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + mi * 16 + g + (e >= 2 ? 8 : 0);
        const int col = col0 + nt * 8 + 2 * t + (e & 1);
        if (col >= seq_k || (causal && col > row + diag)) s[mi][nt][e] = masked;
      }
}

// The sliding-window form of the two above (the portable kernel's extended instances; causal
// arrives as window_right = 0). Key col is visible from query row when col < seq_k and
//   diag - window_left <= col - row <= diag + window_right,
// a negative bound being unbounded. Differences, not sums, so nothing overflows for sequences up
// to 2^30 and bounds below 2^30.
template <int kBlockM, int kBlockN>
__device__ __forceinline__ bool window_tile_needs_mask(int col0, int row0, int seq_k, int diag, int window_left,
                                                       int window_right) {
  return (col0 + kBlockN > seq_k) || (window_right >= 0 && col0 + kBlockN - 1 - row0 > diag + window_right) ||
         (window_left >= 0 && col0 - (row0 + kBlockM - 1) < diag - window_left);
}

// The key tiles a block of query rows [row0, row0 + kBlockM) sees under the window (causal is
// window_right = 0): tiles first .. return value - 1 (`first`, 0 on entry, is raised by a left
// bound); none when first >= the return value. Its last row sees keys below row0 + kBlockM + diag + window_right, its first row keys at
// or past row0 + diag - window_left.
template <int kBlockM, int kBlockN>
__device__ __forceinline__ int window_key_tiles(int row0, int seq_k, int diag, int window_left, int window_right,
                                                int& first) {
  int n_end = seq_k;
  if (window_right >= 0) n_end = int(min(std::int64_t(seq_k), std::int64_t(row0) + kBlockM + diag + window_right));
  if (window_left >= 0) first = max(0, row0 + diag - window_left) / kBlockN;
  return n_end > 0 ? (n_end + kBlockN - 1) / kBlockN : 0;
}

template <int kMTiles, int kNTiles>
__device__ __forceinline__ void mask_tile_window(float (&s)[kMTiles][kNTiles][4], int row0, int col0, int seq_k,
                                                 int diag, int window_left, int window_right, float masked) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int hi = diag + window_right, lo = diag - window_left;
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + mi * 16 + g + (e >= 2 ? 8 : 0);
        const int col = col0 + nt * 8 + 2 * t + (e & 1);
        const int d = col - row;
        if (col >= seq_k || (window_right >= 0 && d > hi) || (window_left >= 0 && d < lo)) s[mi][nt][e] = masked;
      }
}

// Logit soft-capping: raw scores s become cap * tanh(s * cap_in) with cap_in = |scale| / cap, i.e.
// the scaled scores capped; the softmax then takes them with scale 1. tanhf, not the
// approximate instruction: the capped scores feed exp2 directly, and tanh.approx's 2^-11
// relative error would be a score error of up to cap * 2^-11.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void softcap_tile(float (&s)[kMTiles][kNTiles][4], float cap_in, float cap) {
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mi][nt][e] = cap * tanhf(s[mi][nt][e] * cap_in);
}

// Online softmax over one tile of raw (unscaled) scores: updates the row max and sum and turns s
// into P = exp2(s * scale_log2 - max) in place. alpha receives each row's factor exp2(old max -
// new max) for the output accumulator; the return value says whether any row of the warp moved
// its max (otherwise every alpha is exactly 1 and the rescale can be skipped: once the running
// max has settled, most tiles of a long row). Scores stay unscaled until the exponent's FFMA.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ bool softmax_tile(float (&s)[kMTiles][kNTiles][4], RowStats<kMTiles>& st,
                                             const SoftmaxScale& sc, float (&alpha)[kMTiles][2]) {
  bool rescale = false;
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx_raw = s[mi][0][2 * r];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) mx_raw = fmaxf(mx_raw, fmaxf(s[mi][nt][2 * r], s[mi][nt][2 * r + 1]));
      const float mx = fmaxf(st.max[mi][r], quad_max(mx_raw) * sc.scale_log2);
      // A row that has seen only masked keys keeps max -inf; subtracting 0 instead keeps
      // exp2(-inf - base) = 0 rather than NaN.
      const float base = mx == softmax::kNegInf ? 0.f : mx;
      alpha[mi][r] = fast_exp2(st.max[mi][r] - base);
      rescale |= mx != st.max[mi][r];
      st.max[mi][r] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        const float p0 = fast_exp2(fmaf(s[mi][nt][2 * r], sc.scale_log2, -base));
        const float p1 = fast_exp2(fmaf(s[mi][nt][2 * r + 1], sc.scale_log2, -base));
        s[mi][nt][2 * r] = p0;
        s[mi][nt][2 * r + 1] = p1;
        sum += p0 + p1;
      }
      st.sum[mi][r] = st.sum[mi][r] * alpha[mi][r] + sum;
    }
  return __any_sync(0xffffffffu, rescale);
}

// o *= alpha, row by row.
template <int kMTiles, int kDTiles>
__device__ __forceinline__ void rescale_output(float (&o)[kMTiles][kDTiles][4], const float (&alpha)[kMTiles][2]) {
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      o[mi][dt][0] *= alpha[mi][0];
      o[mi][dt][1] *= alpha[mi][0];
      o[mi][dt][2] *= alpha[mi][1];
      o[mi][dt][3] *= alpha[mi][1];
    }
}

// Epilogue: O / l for each of the thread's rows, packed to 16 bits and handed to
// store(r, dt, packed): r is the row within the warp's kMTiles * 16 rows, packed the outputs of
// columns dt * 8 + 2t and + 1. When lse is not null, also writes the natural-log log-sum-exp of
// the rows below seq_q (row0 = the warp's first row in the sequence). A row with l == 0 saw no
// key: output 0 and lse -inf by definition.
template <typename T, int kMTiles, int kDTiles, typename Store>
__device__ __forceinline__ void finish_output(const float (&o)[kMTiles][kDTiles][4], const RowStats<kMTiles>& st,
                                              float* lse, int row0, int seq_q, Store&& store) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int local_row = mi * 16 + (threadIdx.x % 32) / 4 + 8 * r;
      const float l = quad_sum(st.sum[mi][r]);
      const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        store(local_row, dt, pack_float2<T>(o[mi][dt][2 * r] * inv, o[mi][dt][2 * r + 1] * inv));
      }
      if (lse != nullptr && t == 0 && row0 + local_row < seq_q) {
        lse[row0 + local_row] = l > 0.f ? (st.max[mi][r] + log2f(l)) * softmax::kLn2 : softmax::kNegInf;
      }
    }
}

// finish_output straight to global memory: out rows row_stride elements apart, rows at or past
// seq_q not written.
template <typename T, int kMTiles, int kDTiles>
__device__ __forceinline__ void store_output(const float (&o)[kMTiles][kDTiles][4], const RowStats<kMTiles>& st,
                                             T* out, std::int64_t row_stride, float* lse, int row0, int seq_q) {
  const int t = threadIdx.x % 4;
  finish_output<T>(o, st, lse, row0, seq_q, [&](int local_row, int dt, std::uint32_t packed) {
    const int row = row0 + local_row;
    if (row < seq_q) *reinterpret_cast<std::uint32_t*>(out + std::int64_t(row) * row_stride + dt * 8 + 2 * t) = packed;
  });
}

}  // namespace flashkernel::attention
