// Element types and small shape helpers shared by every op of the public C++ API.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace flashkernel {

// kFloat8E4M3 (OCP e4m3, "float8_e4m3fn": no infinities, max finite 448) is a storage type only:
// the paged KV cache pool may hold it (see kv_cache.h); every op that computes on its inputs
// refuses it with an ArgumentError naming the argument.
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat8E4M3 = 3 };

constexpr std::size_t dtype_size(DType dtype) {
  return dtype == DType::kFloat32 ? 4 : (dtype == DType::kFloat8E4M3 ? 1 : 2);
}

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat8E4M3: return "float8_e4m3fn";
  }
  return "unknown";
}

}  // namespace flashkernel
