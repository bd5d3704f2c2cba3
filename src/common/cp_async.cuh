// Asynchronous global->shared copies (sm_80+ `cp.async`): the building block of multi-stage
// shared-memory pipelines. A copy is issued, grouped with `cp_async_commit()`, and waited for with
// `cp_async_wait<N>()` (N = groups allowed to stay in flight), so loads of tile j+1 overlap the
// math on tile j without holding registers.
#pragma once
#include <cstdint>

#include "common/shared_memory.cuh"

// The sm_80 instructions (cp.async here, mma.sync m16n8k16 in mma_sm80.cuh) exist from sm_80 on.
// Below sm_80 (the T4's sm_75) their wrappers take an sm_75 form with the same results, so one
// kernel source serves every architecture; the sm_80+ code is exactly what it was (the sm_75 forms
// sit behind this macro, and scripts/sass_fingerprint.py shows the sm_80/sm_90a SASS unchanged).
#if !defined(__CUDA_ARCH__) || (__CUDA_ARCH__ >= 800)
#define FK_SM80_AVAILABLE 1
#else
#define FK_SM80_AVAILABLE 0
#endif

namespace flashkernel {

// 16 bytes global -> shared, cached in L2 only (.cg: tiles are reused from shared memory, not L1).
// When `valid` is false nothing is read and the 16 destination bytes are zero-filled, which is how
// tails (rows past the end of a tensor) become zeros without a branch around the copy.
__device__ __forceinline__ void cp_async_16(std::uint32_t smem_dst, const void* gmem_src, bool valid = true) {
#if FK_SM80_AVAILABLE
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_dst), "l"(gmem_src), "r"(src_bytes));
#else
  // sm_75 has no cp.async: the same 16 bytes go through registers (.cg as above), synchronously.
  // The commit/wait functions below are then no-ops: every caller already follows a wait with the
  // __syncthreads (or __syncwarp) that publishes other threads' copies, and a thread's own stores
  // are visible to itself at once. The ring loses its overlap, not its correctness.
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (valid) v = __ldcg(static_cast<const uint4*>(gmem_src));
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(smem_dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
#endif
}
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid = true) {
  cp_async_16(smem_address(smem_dst), gmem_src, valid);
}

// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if FK_SM80_AVAILABLE
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Blocks until at most `kPending` committed groups are still in flight (this thread's copies only:
// follow with __syncthreads() before reading data other threads copied).
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if FK_SM80_AVAILABLE
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// The two steps of the multi-stage loop over k tiles that the sm_80 GEMM mainloops share.
// load_stage(slot, tile) issues one tile's copies into ring slot `slot`.
//
// Before the loop: tiles 0..kStages-2 in flight, one group each (empty groups past the end keep
// the wait count uniform).
template <int kStages, typename LoadStage>
__device__ __forceinline__ void cp_async_prologue(int k_tiles, LoadStage& load_stage) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
}
// At the top of step kt: wait for tile kt (this thread's copies, then everyone's), then refill
// the slot tile kt-1 used (the same __syncthreads means every warp is done with it). Tile kt is
// then in slot kt % kStages.
template <int kStages, typename LoadStage>
__device__ __forceinline__ void cp_async_next_tile(int kt, int k_tiles, LoadStage& load_stage) {
  cp_async_wait<kStages - 2>();
  __syncthreads();
  const int next = kt + kStages - 1;
  if (next < k_tiles) load_stage(next % kStages, next);
  cp_async_commit();
}

}  // namespace flashkernel
