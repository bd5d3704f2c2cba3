// head_dim 80 instantiations of the Hopper kernel, every variant (rows padded to 128: the tiles of head_dim 128, O through shared memory (varlen: from registers); see
// TileConfig::kRowDim). One translation unit per head_dim so they compile in parallel.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_padded_d80(const ExtendedParams& p, bool window_or_softcap, DType dtype, cudaStream_t stream) {
  return launch_every_variant<ConfigD80, ConfigD80Varlen>(p, window_or_softcap, dtype, stream);
}

}  // namespace flashkernel::attention::sm90
