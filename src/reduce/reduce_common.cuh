// Pieces both reduce kernels (full and row-wise) share: the ReduceOp -> combine functor map, the
// 16-byte-vector accumulate, and the split of an array into scalar head, vector body, scalar tail.
#pragma once
#include <cstdint>
#include <string>

#include "common/block_reduce.cuh"
#include "common/dtype_traits.cuh"
#include "common/vector_io.cuh"
#include "flashkernel/reduce.h"
#include "flashkernel/status.h"

namespace flashkernel::reduce_detail {

// Calls fn(SumCombine{}) or fn(MaxCombine{}) for `op`.
template <typename Fn>
decltype(auto) dispatch_reduce_op(ReduceOp op, const char* api, Fn&& fn) {
  switch (op) {
    case ReduceOp::kSum: return fn(SumCombine{});
    case ReduceOp::kMax: return fn(MaxCombine{});
  }
  throw ArgumentError(api, "op", "must be ReduceOp::kSum or ReduceOp::kMax, got " + std::to_string(int(op)));
}

template <typename T, typename Combine>
__device__ __forceinline__ float accumulate(float acc, const Vec<T>& v, Combine combine) {
#pragma unroll
  for (int k = 0; k < Vec<T>::kSize; ++k) acc = combine(acc, to_float(v.v[k]));
  return acc;
}

// Elements before the first 16-byte boundary at or after p (p is element-aligned), capped at n:
// they are read as scalars so that everything after them can use aligned vector loads.
template <typename T>
__host__ __device__ __forceinline__ std::int64_t head_elements(const T* p, std::int64_t n) {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  const std::int64_t head = std::int64_t((kVectorBytes - addr % kVectorBytes) % kVectorBytes) / std::int64_t(sizeof(T));
  return head < n ? head : n;
}

}  // namespace flashkernel::reduce_detail
