// Asynchronous global->shared copies (sm_80+ `cp.async`): the building block of multi-stage
// shared-memory pipelines. A copy is issued, grouped with `cp_async_commit()`, and waited for with
// `cp_async_wait<N>()` (N = groups allowed to stay in flight), so loads of tile j+1 overlap the
// math on tile j without holding registers.
#pragma once
#include <cstdint>

#include "common/shared_memory.cuh"

namespace flashkernel {

// 16 bytes global -> shared, cached in L2 only (.cg: tiles are reused from shared memory, not L1).
// When `valid` is false nothing is read and the 16 destination bytes are zero-filled, which is how
// tails (rows past the end of a tensor) become zeros without a branch around the copy.
__device__ __forceinline__ void cp_async_16(std::uint32_t smem_dst, const void* gmem_src, bool valid = true) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_dst), "l"(gmem_src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid = true) {
  cp_async_16(smem_address(smem_dst), gmem_src, valid);
}

// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Blocks until at most `kPending` committed groups are still in flight (this thread's copies only:
// follow with __syncthreads() before reading data other threads copied).
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace flashkernel
