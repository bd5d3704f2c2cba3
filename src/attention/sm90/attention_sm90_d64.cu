// head_dim 64 instantiations of the Hopper kernel.
// Tiles: 128 query rows (2 consumer warpgroups x 64) x 128 keys, 3-stage K/V ring; softmax of
// tile j overlapped with P V of tile j-1.
// Shared memory: Q 16 KiB + 3 x (K 16 KiB + V 16 KiB) = 112 KiB -> 1 block per SM.
// Registers per consumer thread (240 after setmaxnreg): O 32 + S 64 fp32 + P 32.
#include "attention/sm90/attention_sm90.cuh"
#include "common/dtype_traits.cuh"

namespace flashkernel::attention::sm90 {

using ConfigD64 = TileConfig<64, 128, 3, /*kOverlapSoftmax=*/true>;

bool launch_d64(const Params& p, DType dtype, cudaStream_t stream) {
  bool launched = false;
  dispatch_half_dtype(dtype, "flash_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launched = launch<T, ConfigD64>(p, dtype, stream);
  });
  return launched;
}

}  // namespace flashkernel::attention::sm90
