// CPU reference for paged decode attention: double accumulation, K/V read from a host copy of the
// pool through the same page table (so it checks the kernel's math and its addressing); and the
// e4m3 quantization of an FP8 pool.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/dtype_traits.cuh"
#include "flashkernel/kv_cache.h"

namespace flashkernel::reference {

// float8 e4m3 ("fn") on the host, written from the format's definition (bias 7, 3 mantissa bits,
// subnormal step 2^-9, no infinities, S.1111.111 is NaN), independently of cuda_fp8.h (which a
// CPU test compares it with).
inline double e4m3_value(std::uint8_t c) {
  const int e = (c >> 3) & 15, m = c & 7;
  if (e == 15 && m == 7) return NAN;
  const double mag = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(double(8 + m), e - 10);
  return (c & 0x80) ? -mag : mag;
}

// Round to nearest even, saturated to +-448 (the kernels' __NV_SATFINITE); NaN -> 0x7f.
inline std::uint8_t e4m3_encode(float x) {
  if (std::isnan(x)) return 0x7f;
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(double(x));
  if (a >= 448.0) return sign | 0x7e;
  if (a < std::ldexp(1.0, -6)) return sign | std::uint8_t(std::nearbyint(std::ldexp(a, 9)));  // subnormal (8: 2^-6)
  int e = std::ilogb(a);
  int m = int(std::nearbyint((std::ldexp(a, -e) - 1.0) * 8.0));
  if (m == 8) ++e, m = 0;
  return sign | std::uint8_t(((e + 7) << 3) | m);
}

// What a float8 pool stores for x with dequantization scale `scale` (fp32 division, as the kernel).
inline std::uint8_t e4m3_quantize(float x, float scale) { return e4m3_encode(x / scale); }

// The value an element of a host pool copy stands for before its scale.
inline double stored_value(std::uint8_t x) { return e4m3_value(x); }
template <typename T>
double stored_value(T x) {
  return double(to_float(x));
}

// pool: host copy of the whole pool (16-bit elements, or e4m3 bytes with k_scale / v_scale
// [num_layers * num_kv_heads]); q, out: [batch, hq, d]; table: [batch, max_pages].
template <typename P, typename T>
void paged_decode_attention(const std::vector<P>& pool, const KVCacheLayout& l, std::int64_t layer,
                            const std::vector<T>& q, std::int64_t batch, std::int64_t hq,
                            const std::vector<std::int32_t>& table, std::int64_t max_pages,
                            const std::vector<std::int32_t>& lens, double scale, std::vector<double>& out,
                            const std::vector<float>* k_scale = nullptr, const std::vector<float>* v_scale = nullptr) {
  const std::int64_t d = l.head_dim, hkv = l.num_kv_heads, group = hq / hkv;
  out.assign(static_cast<std::size_t>(batch * hq * d), 0.0);
  auto at = [&](std::int64_t page, int kv, std::int64_t h, std::int64_t off, std::int64_t c) {
    const std::vector<float>* sc = kv ? v_scale : k_scale;
    return stored_value(pool[layer * l.layer_elems() + page * l.page_elems() +
                             ((kv * hkv + h) * l.page_size + off) * d + c]) *
           (sc ? double((*sc)[layer * hkv + h]) : 1.0);
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
