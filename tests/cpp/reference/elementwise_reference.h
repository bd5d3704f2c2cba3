// CPU references for elementwise ops: double arithmetic, rounded once to the output type.
#pragma once
#include <cstdint>

#include "common/dtype_traits.cuh"

namespace flashkernel::reference {

template <typename T>
void vector_add(const T* a, const T* b, T* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    double sum = double(to_float(a[i])) + double(to_float(b[i]));
    out[i] = from_float<T>(static_cast<float>(sum));
  }
}

}  // namespace flashkernel::reference
