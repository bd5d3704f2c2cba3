// Device element types: the map from flashkernel::DType to CUDA types, fp32 conversions, and the
// one place that turns a runtime DType into a compile-time type (dispatch_dtype).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>
#include <type_traits>

#include "flashkernel/status.h"
#include "flashkernel/tensor.h"

namespace flashkernel {

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) with T = float, __half or __nv_bfloat16 for `dtype`.
template <typename Fn>
decltype(auto) dispatch_dtype(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(TypeTag<float>{});
    case DType::kFloat16: return fn(TypeTag<__half>{});
    case DType::kBFloat16: return fn(TypeTag<__nv_bfloat16>{});
    default: break;  // float8_e4m3fn is a KV-cache storage type, not a compute type
  }
  throw ArgumentError(op, "dtype", std::string("must be float32, float16 or bfloat16, got ") + dtype_name(dtype));
}

// Same, for ops that only take the 16-bit types (tensor-core kernels).
template <typename Fn>
decltype(auto) dispatch_half_dtype(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat16: return fn(TypeTag<__half>{});
    case DType::kBFloat16: return fn(TypeTag<__nv_bfloat16>{});
    default: break;
  }
  throw ArgumentError(op, "dtype", std::string("must be float16 or bfloat16, got ") + dtype_name(dtype));
}

// The inverse of dispatch_dtype: the DType of a CUDA element type (tests and typed launchers).
template <typename T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "dtype_of: unsupported element type");
  if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  if constexpr (std::is_same_v<T, __half>) return DType::kFloat16;
  return DType::kBFloat16;
}

__host__ __device__ __forceinline__ float to_float(float x) { return x; }
__host__ __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__host__ __device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else {
    return __float2bfloat16_rn(x);
  }
}

#if defined(__CUDACC__)  // device-only helpers (host compilers reject their #pragma unroll)
// N elements of T to fp32 and back, two at a time where T is 16-bit and N even: one packed cvt
// per pair instead of one per element (per-element bf16 rounding plus the repacking cost a
// bf16 kernel ~50% more registers and instructions than fp16; see docs/ops/rope.md). Same values
// as to_float / from_float element by element (round to nearest even).
template <typename T, int N>
__device__ __forceinline__ void to_float_array(const T (&in)[N], float (&out)[N]) {
  if constexpr (std::is_same_v<T, __half> && N % 2 == 0) {
#pragma unroll
    for (int j = 0; j < N / 2; ++j) {
      const float2 x = __half22float2(*reinterpret_cast<const __half2*>(&in[2 * j]));
      out[2 * j] = x.x;
      out[2 * j + 1] = x.y;
    }
  } else if constexpr (std::is_same_v<T, __nv_bfloat16> && N % 2 == 0) {
#pragma unroll
    for (int j = 0; j < N / 2; ++j) {
      const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&in[2 * j]));
      out[2 * j] = x.x;
      out[2 * j + 1] = x.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = to_float(in[j]);
  }
}

template <typename T, int N>
__device__ __forceinline__ void from_float_array(const float (&in)[N], T (&out)[N]) {
  if constexpr (std::is_same_v<T, __half> && N % 2 == 0) {
#pragma unroll
    for (int j = 0; j < N / 2; ++j) *reinterpret_cast<__half2*>(&out[2 * j]) = __floats2half2_rn(in[2 * j], in[2 * j + 1]);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16> && N % 2 == 0) {
#pragma unroll
    for (int j = 0; j < N / 2; ++j) {
      *reinterpret_cast<__nv_bfloat162*>(&out[2 * j]) = __floats2bfloat162_rn(in[2 * j], in[2 * j + 1]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = from_float<T>(in[j]);
  }
}

#endif  // __CUDACC__

}  // namespace flashkernel
