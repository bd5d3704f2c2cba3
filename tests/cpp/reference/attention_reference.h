// CPU reference of flash_attention: double arithmetic over the materialized score matrix, the
// same layout/stride/GQA/causal conventions as the kernel (see include/flashkernel/attention.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/dtype_traits.cuh"
#include "flashkernel/attention.h"

namespace flashkernel::reference {

// out: fp32 [batch, heads_q, seq_q, head_dim] contiguous (left unrounded so tests see the exact
// value); lse: [batch, heads_q, seq_q] (natural log; -inf for a row that sees no key, whose
// output is 0). options: the sliding window and softcap (AttentionOptions' definitions, applied
// literally per (row, key): no shortcut shared with the kernel).
template <typename T>
void flash_attention(const T* q, const T* k, const T* v, const AttentionShape& s, bool causal, double scale,
                     std::vector<double>& out, std::vector<double>& lse, const AttentionOptions& options = {}) {
  const std::int64_t B = s.batch, Hq = s.heads_q, Nq = s.seq_q, Nk = s.seq_k, D = s.head_dim;
  const std::int64_t group = s.heads_q / s.heads_kv;
  out.assign(static_cast<std::size_t>(B * Hq * Nq * D), 0.0);
  lse.assign(static_cast<std::size_t>(B * Hq * Nq), -std::numeric_limits<double>::infinity());
  std::vector<double> scores(static_cast<std::size_t>(std::max<std::int64_t>(Nk, 1)));
  // One KV head's K and V, and one query row, converted to double once (not in the inner loops).
  std::vector<double> kd(static_cast<std::size_t>(Nk * D)), vd(static_cast<std::size_t>(Nk * D)),
      qd(static_cast<std::size_t>(D));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < Hq; ++h) {
      const std::int64_t hk = h / group;
      if (h % group == 0) {
        for (std::int64_t j = 0; j < Nk; ++j) {
          const T* kj = k + b * s.k_stride[0] + hk * s.k_stride[1] + j * s.k_stride[2];
          const T* vj = v + b * s.v_stride[0] + hk * s.v_stride[1] + j * s.v_stride[2];
          for (std::int64_t d = 0; d < D; ++d) {
            kd[j * D + d] = double(to_float(kj[d]));
            vd[j * D + d] = double(to_float(vj[d]));
          }
        }
      }
      for (std::int64_t i = 0; i < Nq; ++i) {
        // Bottom-right alignment: query i sits at key position i + Nk - Nq; causal: keys up to it.
        const std::int64_t pos = i + Nk - Nq;
        const bool right_bounded = causal || options.window_right >= 0;
        const std::int64_t right = causal ? 0 : options.window_right;
        const std::int64_t last = right_bounded ? std::min(Nk - 1, pos + right) : Nk - 1;
        const std::int64_t first = options.window_left >= 0 ? std::max<std::int64_t>(0, pos - options.window_left) : 0;
        if (last < first) continue;
        const T* qi = q + b * s.q_stride[0] + h * s.q_stride[1] + i * s.q_stride[2];
        for (std::int64_t d = 0; d < D; ++d) qd[d] = double(to_float(qi[d]));
        double mx = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = first; j <= last; ++j) {
          const double* kj = kd.data() + j * D;
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d) dot += qd[d] * kj[d];
          scores[j] = dot * scale;
          if (options.softcap > 0.f) scores[j] = options.softcap * std::tanh(scores[j] / options.softcap);
          mx = std::max(mx, scores[j]);
        }
        double sum = 0;
        for (std::int64_t j = first; j <= last; ++j) sum += std::exp(scores[j] - mx);
        double* o = out.data() + ((b * Hq + h) * Nq + i) * D;
        for (std::int64_t j = first; j <= last; ++j) {
          const double p = std::exp(scores[j] - mx) / sum;
          const double* vj = vd.data() + j * D;
          for (std::int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
        }
        lse[(b * Hq + h) * Nq + i] = mx + std::log(sum);
      }
    }
}

}  // namespace flashkernel::reference
