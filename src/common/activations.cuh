// Pointwise activations evaluated in fp32 inside GEMM epilogues (and anywhere else a kernel needs
// them). Both GeLU forms follow PyTorch's definitions of F.gelu(approximate="none" | "tanh").
#pragma once
#include <cuda_runtime.h>

namespace flashkernel {

// 2^x as one MUFU.EX2 ("ex2.approx.ftz.f32", PTX ISA): ~2 ulp; subnormal results flush to 0.
// (exp2f / __expf without -ftz wrap the instruction in a range check and two conditional
// multiplies that keep subnormal results, which no caller here needs.)
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Exact GeLU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))). erff is accurate to ~2 ulp, so the
// result is limited by the output's 16-bit rounding, not by this.
__device__ __forceinline__ float gelu_erf(float x) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
}

// Tanh GeLU: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3) - PyTorch's definition -
// evaluated as the identical function x * sigmoid(2u) = x / (1 + exp(-2u)), since
// 0.5 (1 + tanh(u)) = sigmoid(2u). That form has no cancellation where tanh(u) ~ -1 (the
// 1 + tanh form needs tanh to ~1e-7 absolute there), so the fast exponential and the fast
// division (each ~2 ulp) keep its relative error below ~1e-5 everywhere (the largest part: the
// exponent's argument, up to ~126, rounded to fp32), far below a 16-bit output's rounding: 7 instructions,
// two of them special-function, where the tanh form with an IEEE division compiled to ~3x that
// plus a slow-path branch in every GEMM epilogue element. Saturation: for x < ~-10 the
// denominator passes 2^126 (or overflows) and __fdividef returns 0 (the true value is < 1e-36);
// for large x, exp -> 0 and the result is x.
__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float kC0 = -2.3022081981f;  // -2 sqrt(2/pi) log2(e)
  constexpr float kC1 = -0.1029432396f;  // -2 sqrt(2/pi) log2(e) * 0.044715
  const float minus_2u_log2e = x * fmaf(kC1, x * x, kC0);
  return __fdividef(x, 1.0f + fast_exp2(minus_2u_log2e));
}

}  // namespace flashkernel
