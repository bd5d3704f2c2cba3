// head_dim 64 instantiations of the Hopper kernel.
// Tiles: 128 query rows (2 consumer warpgroups x 64) x 128 keys, 3-stage K/V ring; softmax of
// tile j overlapped with P V of tile j-1 (measured +8-12% over one key tile at a time on H100);
// O stored straight from the accumulators (staging it in shared memory measured 8-12% slower).
// Shared memory: Q 16 KiB + 3 x (K 16 KiB + V 16 KiB) = 112 KiB -> 1 block per SM.
// Registers per consumer thread (232 after setmaxnreg): O 32 + S 64 fp32 + P 32.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_d64(const Params& p, DType dtype, cudaStream_t stream) { return launch_head_dim<ConfigD64>(p, dtype, stream); }

}  // namespace flashkernel::attention::sm90
