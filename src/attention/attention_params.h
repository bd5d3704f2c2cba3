// What the attention launcher hands a kernel path (sm80 or sm90): raw pointers
// plus the validated shape, all in one struct so every path takes the same arguments.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/attention.h"

namespace flashkernel::attention {

struct Params {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // may be null
  AttentionShape shape;
  bool causal;
  float scale;
};

namespace sm80 {
// Kernel paths, one translation unit per (head_dim): T is __half or __nv_bfloat16 via DType.
void launch_d64(const Params& p, DType dtype, cudaStream_t stream);
void launch_d128(const Params& p, DType dtype, cudaStream_t stream);
}  // namespace sm80

namespace sm90 {
// The Hopper path (TMA + wgmma, needs an sm_90a build). Returns false, launching nothing, where it
// does not apply (no sm_90a code, tensors TMA cannot describe); the caller falls back to sm80.
bool launch_d64(const Params& p, DType dtype, cudaStream_t stream);
bool launch_d128(const Params& p, DType dtype, cudaStream_t stream);
}  // namespace sm90

}  // namespace flashkernel::attention
