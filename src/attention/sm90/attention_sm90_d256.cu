// head_dim 256 instantiation of the Hopper kernel (Gemma's head size), dense batches.
// Tiles: 128 query rows (2 consumer warpgroups x 64) x 64 keys, 2-stage K/V ring (ConfigD256:
// Q 64 KiB + 2 x (K 32 KiB + V 32 KiB) = 192 KiB -> 1 block per SM); P V as two 128-column wgmmas
// per 16-key step; O stored from registers.
// Registers per consumer thread (232 after setmaxnreg): O 128 + S 32 fp32 + P 16.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_d256(const Params& p, DType dtype, cudaStream_t stream) { return launch_head_dim<ConfigD256>(p, dtype, stream); }

}  // namespace flashkernel::attention::sm90
