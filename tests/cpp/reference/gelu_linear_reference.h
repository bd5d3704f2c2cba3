// CPU reference of gelu_linear: double accumulation and double GeLU, rounded once to T.
//
// Inputs are converted to double once (converting 16-bit values in the inner loop made the
// reference the slowest part of the GPU test run); the matmul x @ W^T can be computed once and
// shared by every bias/GeLU variant of the same inputs (matmul_nt + gelu_epilogue).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

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

template <typename T>
std::vector<double> to_double(const T* p, std::int64_t n) {
  std::vector<double> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out[i] = double(to_float(p[i]));
  return out;
}

// pre[i, j] = sum_l x[i, l] * w[j, l] in double (x: [m, k], w: [n, k], both row-major). Four
// independent double partial sums per dot product: the same accuracy as one running sum (a
// relative error of ~1e-16, far below any tolerance here) without its add-latency chain.
template <typename T>
std::vector<double> matmul_nt(const T* x, const T* w, std::int64_t m, std::int64_t n, std::int64_t k) {
  const std::vector<double> xd = to_double(x, m * k), wd = to_double(w, n * k);
  std::vector<double> pre(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    const double* xi = xd.data() + i * k;
    for (std::int64_t j = 0; j < n; ++j) {
      const double* wj = wd.data() + j * k;
      double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      std::int64_t l = 0;
      for (; l + 4 <= k; l += 4) {
        a0 += xi[l] * wj[l];
        a1 += xi[l + 1] * wj[l + 1];
        a2 += xi[l + 2] * wj[l + 2];
        a3 += xi[l + 3] * wj[l + 3];
      }
      for (; l < k; ++l) a0 += xi[l] * wj[l];
      pre[i * n + j] = (a0 + a1) + (a2 + a3);
    }
  }
  return pre;
}

// out[i, j] = gelu(pre[i, j] + bias[j]), rounded once to T; bias may be nullptr.
template <typename T>
void gelu_epilogue(const std::vector<double>& pre, const T* bias, T* out, std::int64_t m, std::int64_t n,
                   GeluApproximation approximate) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      const double acc = pre[i * n + j] + (bias ? double(to_float(bias[j])) : 0.0);
      out[i * n + j] = from_float<T>(static_cast<float>(gelu(acc, approximate)));
    }
  }
}

// out[m, n] = gelu(sum_k x[m, k] * w[n, k] + bias[n]); bias may be nullptr.
template <typename T>
void gelu_linear(const T* x, const T* w, const T* bias, T* out, std::int64_t m, std::int64_t n, std::int64_t k,
                 GeluApproximation approximate) {
  gelu_epilogue(matmul_nt(x, w, m, n, k), bias, out, m, n, approximate);
}

}  // namespace flashkernel::reference
