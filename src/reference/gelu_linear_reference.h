// CPU reference of gelu_linear: double accumulation and double GeLU, rounded once to T.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype_traits.cuh"
#include "flashkernel/gelu_linear.h"

namespace flashkernel::reference {

inline double gelu(double v, GeluApproximation approximate) {
  if (approximate == GeluApproximation::kTanh) {
    const double kSqrt2OverPi = 0.79788456080286535588;
    return 0.5 * v * (1.0 + std::tanh(kSqrt2OverPi * (v + 0.044715 * v * v * v)));
  }
  return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
}

// out[m, n] = gelu(sum_k x[m, k] * w[n, k] + bias[n]); bias may be nullptr.
template <typename T>
void gelu_linear(const T* x, const T* w, const T* bias, T* out, std::int64_t m, std::int64_t n, std::int64_t k,
                 GeluApproximation approximate) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = bias ? double(to_float(bias[j])) : 0.0;
      for (std::int64_t l = 0; l < k; ++l) acc += double(to_float(x[i * k + l])) * double(to_float(w[j * k + l]));
      out[i * n + j] = from_float<T>(static_cast<float>(gelu(acc, approximate)));
    }
  }
}

}  // namespace flashkernel::reference
