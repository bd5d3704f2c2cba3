// Shared launch plumbing of the gelu_linear kernels: the opt-in to more than 48 KiB of dynamic
// shared memory, done once per kernel and device.
#pragma once
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

#include "common/cuda_check.h"

namespace flashkernel::gelu_linear_detail {

// `kernel` is a template argument so that every kernel gets its own flag (all these kernels share
// one function-pointer type, so a flag keyed on the type would be shared and skip the opt-in).
template <auto kernel>
void ensure_smem_opt_in(int smem_bytes) {
  // One bit per device ordinal; setting the attribute twice is harmless, so a race only repeats it.
  static std::atomic<std::uint64_t> configured{0};
  int device = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  const std::uint64_t bit = device < 64 ? (std::uint64_t(1) << device) : 0;
  if (bit != 0 && (configured.load(std::memory_order_relaxed) & bit)) return;
  FK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  configured.fetch_or(bit, std::memory_order_relaxed);
}

}  // namespace flashkernel::gelu_linear_detail
