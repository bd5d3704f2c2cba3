// float8 e4m3 ("e4m3fn": no infinities, largest finite value 448) conversions, for kernels that
// store values in FP8 and compute in fp16/bf16/fp32 (the FP8 KV cache). Quantization rounds to
// nearest even and saturates to +-448 (__NV_SATFINITE), so an outlier becomes 448, never NaN.
// Widening is exact: every e4m3 value (at most 4 significant bits, magnitudes 2^-9..448) is a
// float16 and a bfloat16 value, so a kernel can multiply the raw e4m3 values in fp16/bf16 and
// apply the scale to an fp32 result instead.
#pragma once
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "common/dtype_traits.cuh"
#include "common/vector_io.cuh"

namespace flashkernel::fp8 {

constexpr float kE4M3Max = 448.f;

#if defined(__CUDACC__)
// Head h's entry of a float8 pool's per-(layer, KV head) scales, or 1 for a 16-bit pool (no scales).
__device__ __forceinline__ float head_scale(const float* scales, std::int64_t h) { return scales ? scales[h] : 1.f; }

// One float -> one e4m3 byte.
__device__ __forceinline__ std::uint8_t quantize(float x) {
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

// Two floats -> two e4m3 bytes, a in the low byte (one cvt on sm_89+, software before).
__device__ __forceinline__ std::uint16_t quantize2(float a, float b) {
  return static_cast<std::uint16_t>(__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}

// Two e4m3 bytes (low byte first) -> the same two values as a packed pair of T (exact).
template <typename T>
__device__ __forceinline__ std::uint32_t widen2(std::uint16_t x) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(x), __NV_E4M3);
  if constexpr (std::is_same_v<T, __half>) {
    return std::uint32_t(h.x) | (std::uint32_t(h.y) << 16);
  } else {
    // fp16 -> fp32 -> bf16 is exact for these values (4 significant bits, exponents -9..8).
    const __nv_bfloat162 b = __float22bfloat162_rn(__half22float2(__half2(h)));
    return *reinterpret_cast<const std::uint32_t*>(&b);
  }
}

// One e4m3 byte -> float (exact).
__device__ __forceinline__ float to_float(std::uint8_t x) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(x), __NV_E4M3)));
}

// 8 e4m3 bytes (byte i = element i) -> 8 elements of T in one 16-byte vector (exact).
template <typename T>
__device__ __forceinline__ Vec<T> widen8(uint2 x) {
  Vec<T> out;
  auto* w = reinterpret_cast<std::uint32_t*>(&out);
  w[0] = widen2<T>(static_cast<std::uint16_t>(x.x));
  w[1] = widen2<T>(static_cast<std::uint16_t>(x.x >> 16));
  w[2] = widen2<T>(static_cast<std::uint16_t>(x.y));
  w[3] = widen2<T>(static_cast<std::uint16_t>(x.y >> 16));
  return out;
}
#endif  // __CUDACC__

}  // namespace flashkernel::fp8
