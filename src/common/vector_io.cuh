// 16-byte vector loads/stores: the access width that lets a memory-bound kernel reach HBM speed.
#pragma once
#include <cstdint>

namespace flashkernel {

constexpr int kVectorBytes = 16;

// kVectorBytes worth of T, loaded and stored as one 128-bit access.
template <typename T>
struct alignas(kVectorBytes) Vec {
  static constexpr int kSize = kVectorBytes / sizeof(T);
  T v[kSize];
};

template <typename T>
constexpr int vec_size() {
  return Vec<T>::kSize;
}

__host__ __device__ __forceinline__ bool is_aligned(const void* p, std::uintptr_t bytes = kVectorBytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

template <typename T>
__device__ __forceinline__ Vec<T> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T>*>(p);
}

// Streaming load for data read exactly once (do not keep it in L1).
template <typename T>
__device__ __forceinline__ Vec<T> load_vec_stream(const T* p) {
  Vec<T> out;
  *reinterpret_cast<int4*>(&out) = __ldcs(reinterpret_cast<const int4*>(p));
  return out;
}

template <typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T>& v) {
  *reinterpret_cast<Vec<T>*>(p) = v;
}

}  // namespace flashkernel
