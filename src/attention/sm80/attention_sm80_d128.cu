// head_dim 128 instantiations of the sm80 kernel.
// Tiles: 128 query rows x 64 keys, 4 warps (32 rows = 2 mma tiles each), 2-stage K/V ring.
// Shared memory: Q 32 KiB + 2 x (K 16 KiB + V 16 KiB) = 96 KiB -> 2 blocks per SM on H100, 1 on
// A100 (164 KiB) and Ada (100 KiB).
// Registers per thread: O 128 + S 64 fp32 accumulators; Q is re-read from shared memory per key
// tile (keeping it would add 64 registers and spill).
#include "attention/sm80/attention_sm80.cuh"

namespace flashkernel::attention::sm80 {

// ConfigD128, ConfigD128Compact (sm_75): attention_sm80_config.h.

void launch_d128(const Params& p, DType dtype, cudaStream_t stream) {
  launch_half_dtypes<ConfigD128, ConfigD128Compact>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm80
