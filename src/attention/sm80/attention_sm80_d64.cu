// head_dim 64 instantiations of the sm80 kernel.
// Tiles: 128 query rows x 64 keys, 4 warps (32 rows = 2 mma tiles each), 3-stage K/V ring.
// Shared memory: Q 16 KiB + 3 x (K 8 KiB + V 8 KiB) = 64 KiB -> 3 blocks per SM on H100/A100.
// Registers per thread: O 64 + S 64 + Q fragments 32 fp32/u32 values, well under 255.
#include "attention/sm80/attention_sm80.cuh"
#include "common/dtype_traits.cuh"

namespace flashkernel::attention::sm80 {

using ConfigD64 = TileConfig<64, 128, 64, 4, 3>;

void launch_d64(const Params& p, DType dtype, cudaStream_t stream) {
  dispatch_half_dtype(dtype, "flash_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch<T, ConfigD64>(p, stream);
  });
}

}  // namespace flashkernel::attention::sm80
