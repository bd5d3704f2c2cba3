// add_layernorm / add_rms_norm: the transformer block's "residual add + LayerNorm (or RMSNorm)"
// in one pass over each row.
//   s            = x + residual + bias          (residual, bias optional)
//   residual_out = s                            (optional; may alias residual or x)
//   out          = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta
// Semantics of torch.nn.functional.layer_norm(x + residual + bias, ...) with fp32 statistics; s is
// rounded to the tensor dtype once (as stored in residual_out) and the statistics use that rounded
// value, so out is exactly LayerNorm(residual_out).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel {

// x, residual, residual_out, out: [rows, cols] row-major (row stride cols); bias, gamma, beta:
// [cols] (gamma/beta may be null: 1 and 0). dtype float32, float16 or bfloat16 for all of them.
// rows >= 0 (0 launches nothing), 1 <= cols <= 8192; eps > 0; every pointer aligned to its element
// size. out must not overlap the inputs.
// Throws ArgumentError naming the argument / CudaError.
void add_layernorm(const void* x, const void* residual, const void* bias, const void* gamma, const void* beta, void* out,
                   void* residual_out, std::int64_t rows, std::int64_t cols, float eps, DType dtype,
                   cudaStream_t stream = nullptr);

// add_rms_norm: the same with RMSNorm (Llama-family models), no bias and no beta:
//   s            = x + residual                 (residual optional)
//   residual_out = s                            (optional; may alias residual or x)
//   out          = s / sqrt(mean(s^2) + eps) * gamma
// Semantics of torch.nn.functional.rms_norm(x + residual, ...) with fp32 statistics, s rounded to
// the tensor dtype once as above. Arguments and errors as add_layernorm's.
void add_rms_norm(const void* x, const void* residual, const void* gamma, void* out, void* residual_out,
                  std::int64_t rows, std::int64_t cols, float eps, DType dtype, cudaStream_t stream = nullptr);

}  // namespace flashkernel
