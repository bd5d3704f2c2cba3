// head_dim 64 instantiations of the Hopper kernel that take ExtendedParams: a dense batch with a
// sliding window and/or softcap, packed (varlen) batches with or without them, and prefill over a
// paged cache (O from registers in all, as the plain instance). Their own translation unit, so
// they compile in parallel with attention_sm90_d64.cu's.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_extended_d64(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD64, Variant::kDenseExtended>(p, dtype, stream);
}

bool launch_varlen_d64(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD64, Variant::kVarlen>(p, dtype, stream);
}

bool launch_paged_d64(const PagedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD64, Variant::kPaged>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm90
