// Paged decode attention kernels for float16 (split from bfloat16 so the two compile in parallel).
#include "kv_cache/paged_decode_kernel.cuh"

namespace flashkernel::kv_decode {
FLASHKERNEL_DEFINE_PAGED_DECODE(__half, __half)
}  // namespace flashkernel::kv_decode
