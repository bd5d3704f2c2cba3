// head_dim 128 instantiations of the Hopper kernel.
// Tiles: 128 query rows (2 consumer warpgroups x 64) x 128 keys, 3-stage K/V ring; one key tile
// at a time (the overlapped loop measured slower at this head_dim).
// Shared memory: Q 32 KiB + 3 x (K 32 KiB + V 32 KiB) = 224 KiB -> 1 block per SM (3 stages
// measured +1-3% over 2 on H100).
// Registers per consumer thread (240 after setmaxnreg): O 64 + S 64 fp32 + P 32.
#include "attention/sm90/attention_sm90.cuh"
#include "common/dtype_traits.cuh"

namespace flashkernel::attention::sm90 {

using ConfigD128 = TileConfig<128, 128, 3, /*kOverlapSoftmax=*/false>;

bool launch_d128(const Params& p, DType dtype, cudaStream_t stream) {
  bool launched = false;
  dispatch_half_dtype(dtype, "flash_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launched = launch<T, ConfigD128>(p, dtype, stream);
  });
  return launched;
}

}  // namespace flashkernel::attention::sm90
