// A grid-wide barrier for persistent kernels whose CTAs are all co-resident (launched
// cooperatively), with a watchdog: a CTA that waits longer than a timeout (a dependency that will
// never arrive: a bug, or an injected fault in a test) reports which barrier it was and makes
// every other CTA give up too, so the kernel ends with an error instead of hanging the GPU.
//
// Protocol: `count` starts at 0 (the launcher zeroes it before each launch). Barrier number k
// (0, 1, 2, ...) is passed when count reaches (k + 1) * gridDim.x. Arrival is a release
// (red.release) by thread 0 after a __syncthreads, so every write the CTA made before the
// barrier is visible to a CTA that has passed it; the wait is an acquire by thread 0 followed by
// a __syncthreads. Data other CTAs wrote during the kernel must still be read past L1 (ld.cg,
// __ldcg): L1 is not coherent between SMs.
#pragma once
#include <cstdint>

namespace flashkernel::detail {

struct GridBarrier {
  unsigned int* count = nullptr;  // zeroed before the launch
  int* fault = nullptr;           // 0, or 1 + the barrier that timed out (first one wins); a
                                  // user's own bounded waits may store negative codes
  unsigned long long timeout_ns = 0;
  int drop_arrival = -1;  // test hook: CTA 0 never arrives at this barrier (-1: off)
};

__device__ __forceinline__ unsigned int load_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void add_release_gpu(unsigned int* p, unsigned int v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Barrier number `index`. Every thread of every CTA calls it. Returns false when it (or another
// CTA) timed out: the caller must then leave the kernel without touching shared state.
__device__ __forceinline__ bool grid_barrier_sync(const GridBarrier& g, int index) {
  __shared__ int passed;
  __syncthreads();
  if (threadIdx.x == 0) {
    // red.release orders every write the CTA made before the __syncthreads (cumulativity): no
    // separate fence (a fence.sc per barrier measured as a large part of the barrier's cost).
    if (!(blockIdx.x == 0 && index == g.drop_arrival)) add_release_gpu(g.count, 1u);
    const unsigned int target = static_cast<unsigned int>(index + 1) * gridDim.x;
    int ok = 1;
    if (*reinterpret_cast<volatile int*>(g.fault) != 0) ok = 0;
    const unsigned long long start = global_timer_ns();
    for (unsigned int spin = 1; ok && load_acquire_gpu(g.count) < target; ++spin) {
      if (spin % 64 == 0) {
        if (*reinterpret_cast<volatile int*>(g.fault) != 0) {
          ok = 0;
        } else if (global_timer_ns() - start > g.timeout_ns) {
          atomicCAS(g.fault, 0, index + 1);
          ok = 0;
        }
      }
    }
    passed = ok;
  }
  __syncthreads();
  return passed != 0;
}

}  // namespace flashkernel::detail
