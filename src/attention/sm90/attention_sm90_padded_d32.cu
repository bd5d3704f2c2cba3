// head_dim 32 instantiations of the Hopper kernel, every variant (rows padded to 64: the tiles of head_dim 64, O from registers; see
// TileConfig::kRowDim). One translation unit per head_dim so they compile in parallel.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_padded_d32(const ExtendedParams& p, bool window_or_softcap, DType dtype, cudaStream_t stream) {
  return launch_every_variant<ConfigD32, ConfigD32>(p, window_or_softcap, dtype, stream);
}

}  // namespace flashkernel::attention::sm90
