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

// What the portable kernel's extended instances take besides (launch_extended_*): a sliding
// window, softcap, varlen offsets. A separate type so the Params of the other kernels, and with it
// their machine code, stay as they were.
struct ExtendedParams : Params {
  int window_left = -1;   // negative: unbounded
  int window_right = -1;  // causal arrives here as 0
  float softcap = 0.f;    // 0: off
  // Varlen: sequence b's query rows are cu_seqlens_q[b] .. cu_seqlens_q[b + 1] (shape.seq_q is
  // the longest), its keys likewise; shape's batch strides are unused. total_q/total_k bound the
  // offsets; lse is [heads_q, total_q]. Null: a dense batch.
  const std::int32_t* cu_seqlens_q = nullptr;
  const std::int32_t* cu_seqlens_k = nullptr;
  int total_q = 0;
  int total_k = 0;
};

// Prefill over a paged KV cache (the Hopper kernel's kPaged variant): the queries packed as in
// varlen (cu_seqlens_q, total_q), the keys and values read through the page table from the pool
// (p.k: the layer's first element; kv_cache.h's layout). total_k and cu_seqlens_k are unused.
struct PagedParams : ExtendedParams {
  const std::int32_t* page_table = nullptr;  // [batch, table_stride] page ids
  const std::int32_t* seq_lens_k = nullptr;  // [batch] tokens of each sequence in the cache
  int table_stride = 0;
  int page_size = 0;
  int num_pages = 0;
  int num_kv_heads = 0;
};

namespace sm80 {
// Kernel paths, one translation unit per (head_dim): T is __half or __nv_bfloat16 via DType.
void launch_d64(const Params& p, DType dtype, cudaStream_t stream);
void launch_d128(const Params& p, DType dtype, cudaStream_t stream);
// The extended instances (window, softcap, varlen, every head dim): one function per head_dim,
// each in its own translation unit; launch_extended picks by p.shape.head_dim.
void launch_extended_d32(const ExtendedParams& p, DType dtype, cudaStream_t stream);
void launch_extended_d64(const ExtendedParams& p, DType dtype, cudaStream_t stream);
void launch_extended_d80(const ExtendedParams& p, DType dtype, cudaStream_t stream);
void launch_extended_d96(const ExtendedParams& p, DType dtype, cudaStream_t stream);
void launch_extended_d128(const ExtendedParams& p, DType dtype, cudaStream_t stream);
void launch_extended_d256(const ExtendedParams& p, DType dtype, cudaStream_t stream);
}  // namespace sm80

namespace sm90 {
// The Hopper path (TMA + wgmma, needs an sm_90a build). Returns false, launching nothing, where it
// does not apply (no sm_90a code, tensors TMA cannot describe); the caller falls back to sm80.
bool launch_d64(const Params& p, DType dtype, cudaStream_t stream);
bool launch_d128(const Params& p, DType dtype, cudaStream_t stream);
bool launch_d256(const Params& p, DType dtype, cudaStream_t stream);
// Dense batches with a sliding window and/or softcap, and varlen batches with or without them, on
// the Hopper path (head_dim 64/128/256); false where it does not apply.
bool launch_extended_d64(const ExtendedParams& p, DType dtype, cudaStream_t stream);
bool launch_extended_d128(const ExtendedParams& p, DType dtype, cudaStream_t stream);
bool launch_extended_d256(const ExtendedParams& p, DType dtype, cudaStream_t stream);
bool launch_varlen_d64(const ExtendedParams& p, DType dtype, cudaStream_t stream);
bool launch_varlen_d128(const ExtendedParams& p, DType dtype, cudaStream_t stream);
bool launch_varlen_d256(const ExtendedParams& p, DType dtype, cudaStream_t stream);
// head_dim 32, 80 and 96 (rows padded to 64 / 128 in shared memory): every variant in one entry
// point (varlen where p.cu_seqlens_q is set, else dense with or without window/softcap).
bool launch_padded_d32(const ExtendedParams& p, bool window_or_softcap, DType dtype, cudaStream_t stream);
bool launch_padded_d80(const ExtendedParams& p, bool window_or_softcap, DType dtype, cudaStream_t stream);
bool launch_padded_d96(const ExtendedParams& p, bool window_or_softcap, DType dtype, cudaStream_t stream);
// Prefill over a paged cache (head_dim 64/128, the cache's); false where it does not apply.
bool launch_paged_d64(const PagedParams& p, DType dtype, cudaStream_t stream);
bool launch_paged_d128(const PagedParams& p, DType dtype, cudaStream_t stream);
}  // namespace sm90

}  // namespace flashkernel::attention
