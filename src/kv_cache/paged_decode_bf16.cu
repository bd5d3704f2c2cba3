// Paged decode attention kernels for bfloat16 (split from float16 so the two compile in parallel).
#include "kv_cache/paged_decode_kernel.cuh"

namespace flashkernel::kv_decode {
FLASHKERNEL_DEFINE_PAGED_DECODE(__nv_bfloat16, __nv_bfloat16)
}  // namespace flashkernel::kv_decode
