// head_dim 128 instantiations of the Hopper kernel.
// Tiles: 128 query rows (2 consumer warpgroups x 64) x 128 keys, 3-stage K/V ring; softmax of
// tile j overlapped with P V of tile j-1; O written through shared memory with TMA stores.
// Shared memory: Q 32 KiB + 3 x (K 32 KiB + V 32 KiB) = 224 KiB -> 1 block per SM (3 stages
// measured +1-3% over 2 on H100).
// Registers per consumer thread (232 after setmaxnreg): O 64 + S 64 fp32 + P 32.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_d128(const Params& p, DType dtype, cudaStream_t stream) { return launch_head_dim<ConfigD128>(p, dtype, stream); }

}  // namespace flashkernel::attention::sm90
