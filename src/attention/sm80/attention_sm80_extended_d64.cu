// The extended sm80 instances for head_dim 64 (sliding window, softcap, varlen batches; see
// attention_sm80.cuh and ConfigD64 in attention_sm80_config.h). One file per head dim so they
// compile in parallel.
#include "attention/sm80/attention_sm80.cuh"

namespace flashkernel::attention::sm80 {

void launch_extended_d64(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  launch_half_dtypes<ConfigD64, ConfigD64Compact, /*kExtended=*/true>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm80
