// reduce: sum and max of a whole array (to one value) or of every row of a row-major matrix,
// reading each element once at close to the memory-bandwidth limit. fp32 accumulation for every
// input type; the result is rounded once to the input type (what torch.sum / torch.amax return).
// Results are deterministic: the same input on the same device gives bit-identical output.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel {

enum class ReduceOp : int {
  kSum = 0,  // identity 0: the sum of no elements is 0
  kMax = 1,  // no identity: an empty max is an error; NaN propagates
};

// Device scratch that reduce_full needs for `n` elements on the current device (0 when one
// block does the whole reduction). Its contents on entry do not matter.
std::size_t reduce_workspace_bytes(std::int64_t n);

// out[0] = op(x[0], ..., x[n-1]). x: contiguous device array of n elements of `dtype`, any
// element alignment (16-byte vector loads after a scalar head); n may exceed 2^31. out: one
// element of `dtype` on the device, aligned to it. workspace: at least reduce_workspace_bytes(n)
// bytes of 4-byte aligned device memory (may be null when that is 0). n == 0: sum writes 0; max throws ArgumentError.
// One kernel launch (plus a 4-byte memset when the workspace is used). Throws ArgumentError /
// CudaError.
void reduce_full(const void* x, void* out, std::int64_t n, DType dtype, ReduceOp op, void* workspace,
                 std::size_t workspace_bytes, cudaStream_t stream = nullptr);

// out[r] = op(x[r * cols], ..., x[r * cols + cols - 1]) for r < rows. x: contiguous row-major
// device array of rows * cols elements (any element alignment); out: rows elements, same dtype.
// A warp (or a slice of one) per short row, a block per long row. rows == 0 launches nothing;
// cols == 0 writes zeros for sum and throws ArgumentError for max.
void reduce_rows(const void* x, void* out, std::int64_t rows, std::int64_t cols, DType dtype, ReduceOp op,
                 cudaStream_t stream = nullptr);

}  // namespace flashkernel
