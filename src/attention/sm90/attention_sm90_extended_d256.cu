// head_dim 256 instantiations of the Hopper kernel that take ExtendedParams: a dense batch with a
// sliding window and/or softcap, and packed (varlen) batches with or without them (ConfigD256, as
// the plain instance of attention_sm90_d256.cu; a translation unit of their own so the two
// compile in parallel).
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_extended_d256(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD256, Variant::kDenseExtended>(p, dtype, stream);
}

bool launch_varlen_d256(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD256, Variant::kVarlen>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm90
