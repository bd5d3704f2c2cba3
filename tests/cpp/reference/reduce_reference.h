// CPU references for reduce: double accumulation, NaN-propagating max, rounded once to T.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/dtype_traits.cuh"

namespace flashkernel::reference {

template <typename T>
double sum(const T* x, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += double(to_float(x[i]));
  return s;
}

// Sum of |x|: the scale of the rounding error any order of fp32 additions can make.
template <typename T>
double abs_sum(const T* x, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += std::abs(double(to_float(x[i])));
  return s;
}

template <typename T>
double max(const T* x, std::int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t i = 0; i < n; ++i) {
    double v = to_float(x[i]);
    if (std::isnan(v)) return v;
    if (v > m) m = v;
  }
  return m;
}

}  // namespace flashkernel::reference
