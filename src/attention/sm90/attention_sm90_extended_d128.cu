// head_dim 128 instantiations of the Hopper kernel that take ExtendedParams: a dense batch with a
// sliding window and/or softcap (O through shared memory and TMA stores, as the plain instance),
// packed (varlen) batches with or without them and prefill over a paged cache (O from registers:
// ConfigD128Varlen). Their own translation unit, so they compile in parallel with
// attention_sm90_d128.cu's.
#include "attention/sm90/attention_sm90.cuh"

namespace flashkernel::attention::sm90 {

bool launch_extended_d128(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD128, Variant::kDenseExtended>(p, dtype, stream);
}

bool launch_varlen_d128(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD128Varlen, Variant::kVarlen>(p, dtype, stream);
}

bool launch_paged_d128(const PagedParams& p, DType dtype, cudaStream_t stream) {
  return launch_head_dim<ConfigD128Varlen, Variant::kPaged>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm90
