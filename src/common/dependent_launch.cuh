// Programmatic dependent launch (sm_90+): a kernel launched with launch_dependent() may be
// scheduled while the kernel before it in the stream is still running, so the launch latency
// between two short kernels overlaps the first one's tail. The dependent kernel must call
// wait_for_prior_grid() before it reads anything the kernel before wrote: that returns once the
// earlier grid has finished and its writes are visible. The earlier kernel may call
// allow_dependents() to let the dependent's CTAs be scheduled before its own CTAs exit (they then
// sit in wait_for_prior_grid()). Below sm_90 both are no-ops and the launch is an ordinary one.
#pragma once
#include <cuda_runtime.h>

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

// Launches `kernel` as a programmatic dependent of the stream's previous kernel (an ordinary
// launch on GPUs before sm_90). Errors throw flashkernel::Error.
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
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
  config.numAttrs = detail::current_compute_major() >= 9 ? 1 : 0;
  FK_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace flashkernel::pdl
