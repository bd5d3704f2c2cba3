// CPU reference for paged decode attention: double accumulation, K/V read from a host copy of the
// pool through the same page table (so it checks the kernel's math and its addressing).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/dtype_traits.cuh"
#include "flashkernel/kv_cache.h"

namespace flashkernel::reference {

// pool: host copy of the whole pool; q, out: [batch, hq, d]; table: [batch, max_pages].
template <typename T>
void paged_decode_attention(const std::vector<T>& pool, const KVCacheLayout& l, std::int64_t layer,
                            const std::vector<T>& q, std::int64_t batch, std::int64_t hq,
                            const std::vector<std::int32_t>& table, std::int64_t max_pages,
                            const std::vector<std::int32_t>& lens, double scale, std::vector<double>& out) {
  const std::int64_t d = l.head_dim, hkv = l.num_kv_heads, group = hq / hkv;
  out.assign(static_cast<std::size_t>(batch * hq * d), 0.0);
  auto at = [&](std::int64_t page, int kv, std::int64_t h, std::int64_t off, std::int64_t c) {
    return double(to_float(pool[layer * l.layer_elems() + page * l.page_elems() +
                                ((kv * hkv + h) * l.page_size + off) * d + c]));
  };
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < hq; ++h) {
      const std::int64_t kh = h / group, n = lens[b];
      std::vector<double> s(static_cast<std::size_t>(n));
      double mx = -INFINITY;
      for (std::int64_t t = 0; t < n; ++t) {
        const std::int64_t page = table[b * max_pages + t / l.page_size], off = t % l.page_size;
        double dot = 0;
        for (std::int64_t c = 0; c < d; ++c) dot += double(to_float(q[(b * hq + h) * d + c])) * at(page, 0, kh, off, c);
        s[t] = dot * scale;
        mx = std::max(mx, s[t]);
      }
      double den = 0;
      for (auto& x : s) den += (x = std::exp(x - mx));
      for (std::int64_t t = 0; t < n; ++t) {
        const std::int64_t page = table[b * max_pages + t / l.page_size], off = t % l.page_size;
        for (std::int64_t c = 0; c < d; ++c) out[(b * hq + h) * d + c] += s[t] / den * at(page, 1, kh, off, c);
      }
    }
  }
}

}  // namespace flashkernel::reference
