// CPU reference for RoPE: the library's angle convention (fp32 inv_freq computed in double, fp32
// angle = float(position) * inv_freq), then double sin/cos and double rotation, rounded once.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/dtype_traits.cuh"
#include "flashkernel/rope.h"

namespace flashkernel::reference {

inline float rope_inv_freq(std::int64_t i, std::int64_t rotary_dim, double base) {
  return static_cast<float>(1.0 / std::pow(base, double(2 * i) / double(rotary_dim)));
}

// x: [batch, heads, seq, head_dim] contiguous; positions: batch * seq values (row-major).
// Writes out (same layout) and mag per element (0 for pass-through dims): the sum of the absolute
// values of the two products that make up that output, i.e. |a cos| + |b sin| for a' = a cos - b sin
// and |b cos| + |a sin| for b' = b cos + a sin. This is the scale of the fp32 arithmetic error a
// kernel may add to that output (each product carries the relative error of its cos/sin and of its
// rounding); using a's magnitude for b' underestimates it whenever |a sin| >> |a cos| + |b sin|.
template <typename T>
void rope(const std::vector<T>& x, std::vector<T>& out, std::vector<double>& mag, std::int64_t batch,
          std::int64_t heads, std::int64_t seq, std::int64_t head_dim, std::int64_t rotary_dim,
          const std::vector<std::int64_t>& positions, RopeStyle style, double base) {
  out = x;
  mag.assign(x.size(), 0.0);
  const std::int64_t half = rotary_dim / 2;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t n = 0; n < seq; ++n) {
        const float fp = static_cast<float>(positions[b * seq + n]);
        const std::int64_t row = ((b * heads + h) * seq + n) * head_dim;
        for (std::int64_t i = 0; i < half; ++i) {
          const double theta = double(fp * rope_inv_freq(i, rotary_dim, base));  // fp32 product
          const double c = std::cos(theta), s = std::sin(theta);
          const std::int64_t ia = row + (style == RopeStyle::kNeox ? i : 2 * i);
          const std::int64_t ib = row + (style == RopeStyle::kNeox ? i + half : 2 * i + 1);
          const double a = to_float(x[ia]), bb = to_float(x[ib]);
          out[ia] = from_float<T>(static_cast<float>(a * c - bb * s));
          out[ib] = from_float<T>(static_cast<float>(bb * c + a * s));
          mag[ia] = std::abs(a * c) + std::abs(bb * s);
          mag[ib] = std::abs(bb * c) + std::abs(a * s);
        }
      }
}

}  // namespace flashkernel::reference
