// Hopper (sm_90) asynchronous-copy and synchronization primitives: mbarriers with transaction
// counts, TMA bulk tensor copies that complete on them, named barriers, and warpgroup register
// reallocation. Each wraps one PTX instruction; the comment names its PTX ISA section.
//
// The pattern they serve (a producer/consumer pipeline in one thread block):
//   producer: wait `empty[s]`, arrive_expect_tx(`full[s]`, bytes), issue TMA loads into stage s
//   consumer: wait `full[s]` (the copies have landed), compute, arrive on `empty[s]`
// A barrier's phase flips each time its arrivals (and expected bytes) complete; waiters name the
// parity of the phase they wait for, so a ring of stages needs no counters shared between roles.
//
// The TMA and mbarrier instructions exist on plain sm_90; setmaxnreg needs sm_90a (guarded by
// FK_WGMMA_AVAILABLE from wgmma_sm90.cuh, like the wgmma wrappers).
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "common/shared_memory.cuh"
#include "common/wgmma_sm90.cuh"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
#define FK_TMA_AVAILABLE 1
#else
#define FK_TMA_AVAILABLE 0
#endif

namespace flashkernel {

// "mbarrier.init": a barrier whose phase completes after `arrivals` arrive operations (and the
// transaction bytes announced by arrive_expect_tx).
__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, std::uint32_t arrivals) {
#if FK_TMA_AVAILABLE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(arrivals) : "memory");
#endif
}

// "fence.mbarrier_init": makes initialized barriers visible to the async proxy (TMA) before use.
// Follow with __syncthreads() so the other threads see them too.
__device__ __forceinline__ void fence_mbarrier_init() {
#if FK_TMA_AVAILABLE
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// Position of the g-th use of a kStages-deep ring of stages (counted over a block's whole life,
// across work tiles): its slot, and the parity of the phase its barriers complete for that use.
template <int kStages>
struct RingStep {
  __device__ __forceinline__ static int slot(int g) { return g % kStages; }
  __device__ __forceinline__ static std::uint32_t parity(int g) { return std::uint32_t((g / kStages) & 1); }
};

// "mbarrier.arrive.expect_tx": one arrival that also announces `bytes` the TMA will deliver.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
#if FK_TMA_AVAILABLE
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
#endif
}

// "mbarrier.arrive": one arrival (release semantics: this thread's prior shared-memory reads and
// writes happen before the phase completes).
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
#if FK_TMA_AVAILABLE
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory");
#endif
}

// "mbarrier.try_wait.parity" in a loop: returns once the phase with parity `parity` completed.
// A fresh barrier is in phase 0, so waiting for parity 1 returns at once (the "previous" phase):
// producers start waiting on their empty barriers with parity 1.
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
#if FK_TMA_AVAILABLE
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(smem_address(bar)),
      "r"(parity)
      : "memory");
#endif
}

// One "mbarrier.try_wait.parity": true once the phase with parity `parity` completed; false when
// the thread has been suspended for about `suspend_ns` first. For waits that must be bounded:
// without the hint the suspension limit is the hardware's choice, and the caller's watchdog could
// only look at its clock after it.
__device__ __forceinline__ bool mbarrier_try_wait(std::uint64_t* bar, std::uint32_t parity,
                                                  std::uint32_t suspend_ns = 1000) {
#if FK_TMA_AVAILABLE
  std::uint32_t done = 0;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2, %3;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_address(bar)), "r"(parity), "r"(suspend_ns)
      : "memory");
  return done != 0;
#else
  return true;
#endif
}

// "cp.async.bulk.tensor" (tile mode, 4-D): copies the box at coordinates (c0 innermost .. c3) of
// the tensor map into shared memory at `dst` and completes `bytes` on `bar`. Out-of-bounds parts
// of the box are filled with zeros (and still counted in the transaction bytes).
__device__ __forceinline__ void tma_load_4d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                            int c2, int c3) {
#if FK_TMA_AVAILABLE
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_address(bar))
      : "memory");
#endif
}

// "cp.async.bulk" (non-tensor, global -> shared): copies `bytes` contiguous bytes (a multiple of
// 16; both addresses 16-byte aligned) into shared memory and completes them on `bar`, whose phase
// must expect them (mbarrier_arrive_expect_tx). No tensor map: for slices that are one run of
// memory.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, std::uint32_t bytes, std::uint64_t* bar) {
#if FK_TMA_AVAILABLE
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_address(dst)),
               "l"(reinterpret_cast<std::uint64_t>(src)), "r"(bytes), "r"(smem_address(bar))
               : "memory");
#endif
}

// "cp.async.bulk.tensor" (tile mode, 4-D, shared -> global, bulk-group completion): writes the
// box at `src` to coordinates (c0 innermost .. c3) of the tensor map; the parts of the box outside
// the tensor are not written. Make the box's shared-memory writes visible to the async proxy first
// (fence_proxy_async_shared), then tma_store_commit() and tma_store_wait_read() before `src` is
// written again.
__device__ __forceinline__ void tma_store_4d(const CUtensorMap* map, const void* src, int c0, int c1, int c2, int c3) {
#if FK_TMA_AVAILABLE
  asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
                   reinterpret_cast<std::uint64_t>(map)),
               "r"(smem_address(src)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
               : "memory");
#endif
}

// "cp.async.bulk.commit_group": closes the group of this thread's bulk stores issued so far.
__device__ __forceinline__ void tma_store_commit() {
#if FK_TMA_AVAILABLE
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}

// "cp.async.bulk.wait_group.read 0": returns once every committed bulk store of this thread has
// finished reading its shared-memory source (the global writes may still be in flight; they are
// visible to later kernels).
__device__ __forceinline__ void tma_store_wait_read() {
#if FK_TMA_AVAILABLE
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}

// "prefetch.tensormap": pulls a __grid_constant__ tensor map into the descriptor cache early.
__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
#if FK_TMA_AVAILABLE
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
#endif
}

// "bar.sync" / "bar.arrive" on a named barrier (ids 1..15; 0 is __syncthreads): `threads` (a
// multiple of 32) threads take part. arrive does not wait: the producer side of a hand-off.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// "setmaxnreg": moves registers between warpgroups of a block (sm_90a). A producer warpgroup
// that only issues copies gives registers up; the math warpgroups take them. The kernel needs a
// register cap at entry (__launch_bounds__(threads, 1)) and each role in one branch.
template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_dealloc() {
#if FK_WGMMA_AVAILABLE
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_alloc() {
#if FK_WGMMA_AVAILABLE
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

}  // namespace flashkernel
