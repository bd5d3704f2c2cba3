// The extended sm80 instances for head_dim 128 (sliding window, softcap, varlen batches; see
// attention_sm80.cuh and ConfigD128 in attention_sm80_config.h). One file per head dim so they
// compile in parallel.
#include "attention/sm80/attention_sm80.cuh"

namespace flashkernel::attention::sm80 {

void launch_extended_d128(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  launch_half_dtypes<ConfigD128, ConfigD128Compact, /*kExtended=*/true>(p, dtype, stream);
}

}  // namespace flashkernel::attention::sm80
