// Programmatic dependent launch (sm_90+): a kernel launched with launch_dependent() may be
// scheduled while the kernel before it in the stream is still running, so the launch latency
// between two short kernels overlaps the first one's tail. The dependent kernel must call
// wait_for_prior_grid() before it reads anything the kernel before wrote, and before it writes
// anything: that returns once the earlier grid has finished and its writes are visible. Before
// the wait it may only read data no kernel of the stream writes (weights) or pull lines into L2
// (prefetch_l2: a hint, never stale, since L2 is where every SM's writes meet). The earlier
// kernel may call allow_dependents() to let the dependent's CTAs be scheduled before its own CTAs
// exit (they then sit in wait_for_prior_grid()). Both are no-ops in a kernel launched the ordinary
// way, and below sm_90, so a kernel written for dependent launch runs unchanged when it is not.
//
// pdl::launch() launches as a dependent only inside a DependentLaunches scope on the calling
// thread (the GPT-2 engine opens one around its decode-step capture); elsewhere it is an ordinary
// launch, so a library call made by a user is never ordered differently from its stream.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "common/cuda_check.h"
#include "common/launch.h"

namespace flashkernel::pdl {

__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Pulls the bytes [p, p + bytes) into L2, one prefetch per 128-byte line, spread over `threads`
// threads (this one is `thread`). Changes no result: safe before wait_for_prior_grid().
__device__ __forceinline__ void prefetch_l2(const void* p, std::int64_t bytes, int thread, int threads) {
  const char* base = static_cast<const char*>(p);
  for (std::int64_t off = std::int64_t(thread) * 128; off < bytes; off += std::int64_t(threads) * 128) {
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(base + off));
  }
}

// Launches `kernel`, as a programmatic dependent of the stream's previous kernel when `dependent`
// is set and the GPU is sm_90+ (else an ordinary launch). Errors throw flashkernel::Error.
template <typename... Params, typename... Args>
void launch_as(bool dependent, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
               Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = dependent && detail::current_compute_major() >= 9 ? 1 : 0;
  FK_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

// Always a programmatic dependent (on sm_90+): for a kernel whose predecessor is always the
// library's own kernel that allows it (the split combine after the paged decode kernel).
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                      Args&&... args) {
  launch_as(true, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

// A dependent inside a DependentLaunches scope, else ordinary: for kernels that call
// wait_for_prior_grid() before their first dependent access.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, Args&&... args) {
  launch_as(dependent_launches(), kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace flashkernel::pdl
