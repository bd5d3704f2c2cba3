// Warp- and block-level reductions of one fp32 value per thread, for any op that reduces along a
// row or over a whole array (reduce, softmax, layernorm, losses).
//
// Every combine happens in a fixed tree (shuffle offsets and warp order never depend on timing),
// so for the same launch shape the result is bit-identical run to run.
#pragma once
#include <cuda_runtime.h>

#include <cmath>

namespace flashkernel {

constexpr unsigned kFullWarpMask = 0xffffffffu;
constexpr int kWarpSize = 32;

// Smallest power of two >= x (x >= 1): shuffle trees need a power-of-two width.
constexpr int next_pow2(int x) { return x <= 1 ? 1 : 2 * next_pow2((x + 1) / 2); }

// Combine functors: identity() is the neutral element the accumulators start from.
struct SumCombine {
  __host__ __device__ static constexpr float identity() { return 0.f; }
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// max that propagates NaN like torch.amax (fmaxf would drop it). If b is NaN the comparison is
// false and b is returned; if a is NaN, a != a picks a.
struct MaxCombine {
  __host__ __device__ static constexpr float identity() { return -INFINITY; }
  __device__ __forceinline__ float operator()(float a, float b) const { return (a > b || a != a) ? a : b; }
};

// Tree reduction over groups of kWidth consecutive lanes (kWidth a power of two <= 32). All 32
// lanes of the warp must call it (the shuffles use the full mask). kAllLanes: a butterfly
// (__shfl_xor_sync) leaves the result in every lane of the group; otherwise __shfl_down_sync
// leaves it in the group's first lane and partials in the others.
template <int kWidth, bool kAllLanes, typename Combine>
__device__ __forceinline__ float warp_tree(float v, Combine combine) {
  static_assert(kWidth >= 1 && kWidth <= kWarpSize && (kWidth & (kWidth - 1)) == 0, "kWidth: power of 2 <= 32");
#pragma unroll
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    if constexpr (kAllLanes) {
      v = combine(v, __shfl_xor_sync(kFullWarpMask, v, offset, kWidth));
    } else {
      v = combine(v, __shfl_down_sync(kFullWarpMask, v, offset, kWidth));
    }
  }
  return v;
}

// The result in the group's first lane.
template <int kWidth = kWarpSize, typename Combine>
__device__ __forceinline__ float warp_reduce(float v, Combine combine) {
  return warp_tree<kWidth, false>(v, combine);
}

// The result in every lane of the group: for kernels where all threads of a row need the
// statistic (softmax max/sum, layernorm mean/var).
template <int kWidth = kWarpSize, typename Combine>
__device__ __forceinline__ float warp_allreduce(float v, Combine combine) {
  return warp_tree<kWidth, true>(v, combine);
}

// Block-wide reduction: warp trees, then warp 0 combines the per-warp results in warp order.
// kThreads = blockDim.x (a multiple of 32, at most 1024). `scratch` is shared memory of at least
// kThreads / 32 floats. The result is valid in thread 0 only. Starts with a __syncthreads so the
// same scratch can be reused by back-to-back calls.
template <int kThreads, typename Combine>
__device__ __forceinline__ float block_reduce(float v, Combine combine, float* scratch) {
  static_assert(kThreads % kWarpSize == 0 && kThreads <= 1024, "kThreads: multiple of 32, <= 1024");
  constexpr int kWarps = kThreads / kWarpSize;
  v = warp_reduce(v, combine);
  if constexpr (kWarps == 1) {
    return v;
  } else {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
      v = lane < kWarps ? scratch[lane] : Combine::identity();
      v = warp_reduce<next_pow2(kWarps)>(v, combine);
    }
    return v;
  }
}

// block_reduce whose result every thread of the block receives (one extra shared-memory slot and
// barrier). `scratch` needs kThreads / 32 + 1 floats.
template <int kThreads, typename Combine>
__device__ __forceinline__ float block_allreduce(float v, Combine combine, float* scratch) {
  constexpr int kWarps = kThreads / kWarpSize;
  if constexpr (kWarps == 1) {
    return warp_allreduce(v, combine);
  } else {
    v = block_reduce<kThreads>(v, combine, scratch);  // its leading barrier protects the slot
    if (threadIdx.x == 0) scratch[kWarps] = v;
    __syncthreads();
    return scratch[kWarps];
  }
}

}  // namespace flashkernel
