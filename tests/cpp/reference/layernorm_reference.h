// CPU reference of add_layernorm / add_rms_norm (rms: mean taken as 0) in double precision
// (rounding s to T first, like the ops' documented semantics).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype_traits.cuh"

namespace flashkernel::reference {

template <typename T>
void add_layernorm(const T* x, const T* residual, const T* bias, const T* gamma, const T* beta, T* out, T* sum_out,
                   std::int64_t rows, std::int64_t cols, double eps, bool rms = false) {
  for (std::int64_t r = 0; r < rows; ++r) {
    double mean = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      double s = to_float(x[r * cols + c]);
      if (residual) s += to_float(residual[r * cols + c]);
      if (bias) s += to_float(bias[c]);
      sum_out[r * cols + c] = from_float<T>(static_cast<float>(s));
      mean += to_float(sum_out[r * cols + c]);
    }
    mean = rms ? 0.0 : mean / double(cols);
    double var = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double d = to_float(sum_out[r * cols + c]) - mean;
      var += d * d;
    }
    var /= double(cols);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (std::int64_t c = 0; c < cols; ++c) {
      double o = (to_float(sum_out[r * cols + c]) - mean) * rstd;
      if (gamma) o *= to_float(gamma[c]);
      if (beta) o += to_float(beta[c]);
      out[r * cols + c] = from_float<T>(static_cast<float>(o));
    }
  }
}

}  // namespace flashkernel::reference
