// gelu_linear: out = GeLU(x @ weight^T + bias), one kernel. The GEMM's fp32 accumulators get the
// bias and the GeLU in registers and are written once, so the [M, N] pre-activation never goes to
// memory. Semantics of F.gelu(F.linear(x, weight, bias), approximate=...).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel {

// PyTorch's `approximate` argument of F.gelu.
enum class GeluApproximation : int {
  kNone = 0,  // exact: 0.5 x (1 + erf(x / sqrt(2)))
  kTanh = 1,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
};

// Which kernel computes m > 64 (m <= 64 always takes the weight-streaming kernel). kAuto chooses
// from the device and the shape. kSm80: the portable mma.sync kernels, what GPUs without the Hopper
// path run (for comparing the two on one card). kSm90*: one variant of the Hopper warp-specialized
// TMA + wgmma kernel (tile 128x256, 128x192, 128x128, or 128x128 with ping-pong consumers); they
// need compute capability 9.x and an sm_90a build, else ArgumentError naming `backend`.
enum class GeluLinearBackend : int {
  kAuto = 0,
  kSm80 = 1,
  kSm90Wide = 2,
  kSm90Mid = 3,
  kSm90Narrow = 4,
  kSm90PingPong = 5,
};

// x:      [m, k] row-major (row stride k), device memory
// weight: [n, k] row-major (nn.Linear's layout)
// bias:   [n] or nullptr
// out:    [m, n] row-major; must not overlap the inputs
// dtype:  float16 or bfloat16 (all four tensors); accumulation is fp32.
// m >= 0 (0 launches nothing); n and k positive multiples of 8 (16-byte rows); m, n, k at most
// 2^31 - 256; x, weight and out 16-byte aligned, bias 2-byte aligned. M <= 64 takes a weight-streaming path (decode), larger M a tiled tensor-core
// GEMM. Throws ArgumentError naming the argument / CudaError.
void gelu_linear(const void* x, const void* weight, const void* bias, void* out, std::int64_t m, std::int64_t n,
                 std::int64_t k, DType dtype, GeluApproximation approximate = GeluApproximation::kNone,
                 cudaStream_t stream = nullptr, GeluLinearBackend backend = GeluLinearBackend::kAuto);

}  // namespace flashkernel
