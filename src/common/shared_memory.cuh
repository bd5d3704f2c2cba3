// The 32-bit shared-memory address of a generic pointer into shared memory: the operand form of
// every PTX instruction that names shared memory (cp.async, ldmatrix, mbarrier, bulk copies, wgmma
// descriptors). One helper for all of them.
#pragma once
#include <cstdint>

namespace flashkernel {

__device__ __forceinline__ std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

}  // namespace flashkernel
