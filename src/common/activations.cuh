// Pointwise activations evaluated in fp32 inside GEMM epilogues (and anywhere else a kernel needs
// them). Both GeLU forms follow PyTorch's definitions of F.gelu(approximate="none" | "tanh").
#pragma once
#include <cuda_runtime.h>

namespace flashkernel {

// Exact GeLU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))). erff is accurate to ~2 ulp, so the
// result is limited by the output's 16-bit rounding, not by this.
__device__ __forceinline__ float gelu_erf(float x) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
}

// tanh(u) = 1 - 2 / (exp(2u) + 1) through the fast exponential and the fast division (each ~2 ulp):
// absolute error ~1e-7, which is what matters where 1 + tanh is formed (GeLU), and far below a
// 16-bit output's rounding, where the tanh.approx instruction (~5e-4 relative) would not be. The
// IEEE division it replaces compiled to a call with a slow-path branch, ~3x the instructions of
// this whole function, in every GEMM epilogue element. Clamping 2u at 80 keeps exp(2u) + 1 below
// 2^126, where __fdividef is exact enough (it returns 0 above): 2 / e^80 ~ 4e-35, so tanh = 1;
// exp -> 0 gives -1.
__device__ __forceinline__ float tanh_accurate(float u) {
  return 1.0f - __fdividef(2.0f, __expf(fminf(2.0f * u, 80.0f)) + 1.0f);
}

// Tanh GeLU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  const float u = kSqrt2OverPi * fmaf(0.044715f * x, x * x, x);
  return 0.5f * x * (1.0f + tanh_accurate(u));
}

}  // namespace flashkernel
