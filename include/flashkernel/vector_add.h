// vector_add: out = a + b elementwise. The smallest op, kept as the walking skeleton that goes
// through every layer of the library (C++ API, PyTorch op, Triton twin, tests, benchmark).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel {

// a, b, out: contiguous device arrays of n elements of `dtype` (out may alias a or b).
// n may be 0 (nothing is launched). Any element-aligned address is accepted (a pointer off its
// element size is an ArgumentError); 16-byte aligned arrays take the vectorized path. Throws ArgumentError / CudaError.
void vector_add(const void* a, const void* b, void* out, std::int64_t n, DType dtype,
                cudaStream_t stream = nullptr);

}  // namespace flashkernel
