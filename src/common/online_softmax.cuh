// Online-softmax state and its merge, shared by attention kernels (FlashAttention tiles, split-KV
// decode). Works in base 2: scores are pre-multiplied by log2(e) (fold it into the softmax scale),
// so every exponential is one exp2f (a single MUFU.EX2) instead of expf's extra multiply.
//
// A state over a set of scores s_j with values v_j is (m, l, acc):
//   m   = max_j s_j                       (-inf for an empty set)
//   l   = sum_j exp2(s_j - m)
//   acc = sum_j exp2(s_j - m) * v_j       (per output column)
// Two states over disjoint sets merge exactly into the state over their union, in any order,
// which is what lets tiles / warps / KV splits be processed independently and combined after.
#pragma once
#include <cmath>

namespace flashkernel::softmax {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;  // a base-2 log-sum-exp times kLn2 is the natural-log one
constexpr float kNegInf = -INFINITY;

// exp2(m_old - m_new) with the empty-set convention: a state whose max is -inf contributes 0
// (avoids -inf - -inf = NaN when both are empty).
__device__ __forceinline__ float rescale_factor(float m_old, float m_new) {
  return m_old == kNegInf ? 0.f : exp2f(m_old - m_new);
}

// Merges (m_b, l_b, acc_b) into (m_a, l_a, acc_a).
template <int N>
__device__ __forceinline__ void merge(float& m_a, float& l_a, float (&acc_a)[N], float m_b, float l_b,
                                      const float (&acc_b)[N]) {
  const float m = fmaxf(m_a, m_b);
  const float fa = rescale_factor(m_a, m), fb = rescale_factor(m_b, m);
  l_a = l_a * fa + l_b * fb;
#pragma unroll
  for (int i = 0; i < N; ++i) acc_a[i] = acc_a[i] * fa + acc_b[i] * fb;
  m_a = m;
}

// Folds a block of new scores into the state: `block_max` is the max of the new scores (already
// reduced by the caller). Returns the factor the caller multiplies its acc by; afterwards the
// caller adds exp2(s - m) * v for each new score s and adds those weights to l.
__device__ __forceinline__ float advance_max(float& m, float& l, float block_max) {
  const float m_new = fmaxf(m, block_max);
  const float f = rescale_factor(m, m_new);
  l *= f;
  m = m_new;
  return f;
}

// log2-sum-exp2 of a state: m + log2(l); -inf for an empty state. The quantity split-KV partial
// results are combined with.
__device__ __forceinline__ float log_sum_exp2(float m, float l) {
  return l > 0.f ? m + log2f(l) : kNegInf;
}

// Weight of a partial result with log-sum-exp `lse` in a combine whose largest lse is `lse_max`.
__device__ __forceinline__ float combine_weight(float lse, float lse_max) {
  return rescale_factor(lse, lse_max);
}

}  // namespace flashkernel::softmax
