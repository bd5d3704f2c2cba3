// head_dim 64 instantiations of the sm80 kernel.
// Tiles: 128 query rows x 128 keys, 4 warps (32 rows = 2 mma tiles each), 2-stage K/V ring.
// Shared memory: Q 16 KiB + 2 x (K 16 KiB + V 16 KiB) = 80 KiB -> 2 blocks per SM on H100 and
// A100 (164 KiB), 1 on Ada (100 KiB). 128-key tiles halve the per-key cost of the barriers and of
// the row-max shuffles against 64-key tiles: +4-10% on H100 (DEVELOPMENT_LOG.md); a 3-stage ring
// (112 KiB) measured the same on H100 and would not fit Ada.
// Registers per thread: S 128 + O 64 fp32 accumulators (255 used, no spill).
#include "attention/sm80/attention_sm80.cuh"

namespace flashkernel::attention::sm80 {

// ConfigD64, ConfigD64Compact (sm_75): attention_sm80_config.h.

void launch_d64(const Params& p, DType dtype, cudaStream_t stream) {
  launch_half_dtypes<ConfigD64, ConfigD64Compact>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm80
