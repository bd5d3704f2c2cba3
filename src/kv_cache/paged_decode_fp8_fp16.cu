// Paged decode attention kernels for a float8 (e4m3) pool with float16 queries and outputs: the
// shared-memory ring variants only (one file per activation type, compiled in parallel).
#include "kv_cache/paged_decode_kernel.cuh"

namespace flashkernel::kv_decode {
FLASHKERNEL_DEFINE_PAGED_DECODE(__half, __nv_fp8_e4m3)
}  // namespace flashkernel::kv_decode
