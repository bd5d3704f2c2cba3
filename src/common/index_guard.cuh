// Bounds checks for indices that kernels read from device memory (slots, page ids, positions,
// sequence lengths). The host cannot see such values before the launch, so the kernel checks each
// one before it addresses memory with it. An out-of-range value is never used: the kernel skips
// the entry (or writes NaN, where an output must be written) and, when the caller passed a fault
// flag, ORs a bit naming the offending argument into it. The host reads the flag after the launch
// and raises an error that names the argument. A device-side assert would do neither: it kills
// the whole CUDA context, and every later call in the process fails with it.
#pragma once
#include <cstdint>

namespace flashkernel::detail {

// Records `fault_bit` in *flag (a device int32 the caller zeroed); no-op for a null flag.
__device__ __forceinline__ void record_index_fault(std::int32_t* flag, std::int32_t fault_bit) {
  if (flag != nullptr) atomicOr(reinterpret_cast<int*>(flag), static_cast<int>(fault_bit));
}

// True when 0 <= i < n; otherwise records the fault and returns false.
__device__ __forceinline__ bool index_in_range(std::int64_t i, std::int64_t n, std::int32_t* flag = nullptr,
                                               std::int32_t fault_bit = 0) {
  if (i >= 0 && i < n) return true;
  record_index_fault(flag, fault_bit);
  return false;
}

}  // namespace flashkernel::detail
