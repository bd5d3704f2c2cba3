// flash_attention: out = softmax(scale * Q K^T [+ causal mask]) V computed tile by tile with an
// online softmax, never materializing the Nq x Nk score matrix.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/kv_cache.h"
#include "flashkernel/tensor.h"

namespace flashkernel {

// Shapes and strides (in elements) of one attention call. q is [batch, heads_q, seq_q, head_dim],
// k and v are [batch, heads_kv, seq_k, head_dim], out is like q; the last dimension of every tensor
// is contiguous. heads_q % heads_kv == 0: query head h reads kv head h / (heads_q / heads_kv)
// (GQA; heads_kv == 1 is MQA).
struct AttentionShape {
  std::int64_t batch = 0;
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;
  std::int64_t seq_q = 0;
  std::int64_t seq_k = 0;
  std::int64_t head_dim = 0;
  // {batch, head, seq} strides of q, k, v, out.
  std::int64_t q_stride[3] = {0, 0, 0};
  std::int64_t k_stride[3] = {0, 0, 0};
  std::int64_t v_stride[3] = {0, 0, 0};
  std::int64_t o_stride[3] = {0, 0, 0};
};

// Which kernel runs. kAuto: the Hopper kernel (TMA + wgmma + warp specialization) on sm_90 GPUs
// when the library was built with sm_90a and TMA can describe the tensors, the portable one
// (mma.sync, sm_80 and newer) otherwise. kSm80 / kSm90 force one; kSm90 where it cannot run
// (another GPU, a build without 90a) is an ArgumentError naming `backend`.
enum class AttentionBackend : int { kAuto = 0, kSm80 = 1, kSm90 = 2 };

// Masks and score transforms beyond causal (FlashAttention's semantics). Query i of a sequence
// sits at key position i + seq_k - seq_q (bottom-right alignment).
//   window_left / window_right >= 0: a sliding window, query i sees keys j with
//     i + seq_k - seq_q - window_left <= j <= i + seq_k - seq_q + window_right; -1 is unbounded on
//     that side (below -1: ArgumentError naming window_left / window_right). causal sets
//     window_right to 0.
//   softcap > 0: each scaled score s becomes softcap * tanh(s / softcap) before the softmax
//     (Gemma 2's logit soft-capping); 0 is off.
struct AttentionOptions {
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  float softcap = 0.f;
};

// Supported: dtype float16 or bfloat16; head_dim 32, 64, 80, 96, 128 or 256; seq_q, seq_k >= 1
// (0 launches nothing); every pointer 16-byte aligned and every stride a multiple of 8 elements
// (the kernel moves 16-byte chunks). causal: query i sees keys j <= i + seq_k - seq_q
// (bottom-right alignment; a row that sees no key gets out = 0 and lse = -inf). scale multiplies
// QK^T. lse (optional, may be null): fp32 [batch, heads_q, seq_q] contiguous, 4-byte aligned, the
// natural-log log-sum-exp of each row's final scores. kAuto runs the Hopper kernel on sm_90 for
// every head_dim but 32 (windows and softcap included) and the portable kernel otherwise; kSm90 forces
// the Hopper kernel, which covers every head_dim with or without window and softcap (no 9.x GPU
// is an ArgumentError naming `backend`); kSm80 forces the
// portable kernel. Throws ArgumentError before any launch, CudaError.
void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse,
                     const AttentionShape& shape, DType dtype, bool causal, float scale,
                     cudaStream_t stream = nullptr, AttentionBackend backend = AttentionBackend::kAuto);
void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse,
                     const AttentionShape& shape, DType dtype, bool causal, float scale,
                     const AttentionOptions& options, cudaStream_t stream = nullptr,
                     AttentionBackend backend = AttentionBackend::kAuto);

// A packed batch of sequences of different lengths (FlashAttention's varlen layout): q is
// [total_q, heads_q, head_dim], k and v [total_k, heads_kv, head_dim], out like q; sequence b owns
// rows cu_seqlens_q[b] .. cu_seqlens_q[b + 1] of q and out, cu_seqlens_k[b] .. cu_seqlens_k[b + 1]
// of k and v. cu_seqlens_* are device int32 [batch + 1], read by the kernel only (no host
// synchronization): each sequence's range is clamped to [0, total) and its length to max_seq, so
// bad offsets never reach memory outside the tensors (they give wrong results, not a fault).
struct AttentionVarlenShape {
  std::int64_t batch = 0;
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;
  std::int64_t head_dim = 0;
  std::int64_t total_q = 0;
  std::int64_t total_k = 0;
  std::int64_t max_seq_q = 0;  // >= every sequence's query length
  std::int64_t max_seq_k = 0;  // >= every sequence's key length
  const std::int32_t* cu_seqlens_q = nullptr;
  const std::int32_t* cu_seqlens_k = nullptr;
  // {token, head} strides of q, k, v, out (in elements; the last dimension is contiguous).
  std::int64_t q_stride[2] = {0, 0};
  std::int64_t k_stride[2] = {0, 0};
  std::int64_t v_stride[2] = {0, 0};
  std::int64_t o_stride[2] = {0, 0};
};

// One launch over every (sequence, query tile). causal, scale and options as flash_attention's,
// applied per sequence. lse (optional): fp32 [heads_q, total_q] contiguous. backend: kAuto runs
// the Hopper kernel on sm_90 (but at head_dim 32), else the portable kernel (sm_80 and newer;
// fp16 on sm_75); kSm90 forces the Hopper kernel (TMA +
// wgmma, every head_dim, windows and softcap included; where it does not apply, an error
// naming `backend`), kSm80 the portable one.
void flash_attention_varlen(const void* q, const void* k, const void* v, void* out, float* lse,
                            const AttentionVarlenShape& shape, DType dtype, bool causal, float scale,
                            const AttentionOptions& options = {}, cudaStream_t stream = nullptr,
                            AttentionBackend backend = AttentionBackend::kAuto);

// Prefill over a paged KV cache (kv_cache.h's pool layout and page tables): sequence b's new
// query tokens, rows cu_seqlens_q[b] .. cu_seqlens_q[b + 1] of q, attend causally (bottom-right
// aligned: new token t of a sequence holding L tokens sits at position L - n_new + t) to the
// seq_lens[b] tokens the cache holds for it in `layer` (its new ones included: append them
// first), read through page_table row b, with the window and softcap of `options`. One launch of
// the Hopper kernel, K/V read where they lie (no gather).
struct PagedPrefillArgs {
  const void* q = nullptr;     // [total_q, heads_q, layout.head_dim], contiguous, the pool's dtype
  void* out = nullptr;         // like q
  float* lse = nullptr;        // optional: fp32 [heads_q, total_q]
  const void* pool = nullptr;  // the cache's pool, `layout` (16-bit dtype)
  KVCacheLayout layout;
  std::int64_t layer = 0;
  const std::int32_t* page_table = nullptr;    // device [batch, max_pages]
  std::int64_t max_pages = 0;
  const std::int32_t* seq_lens = nullptr;      // device [batch]; at most max_pages * page_size each
  const std::int32_t* cu_seqlens_q = nullptr;  // device [batch + 1], non-decreasing from 0
  std::int64_t batch = 0;
  std::int64_t heads_q = 0;   // a multiple of layout.num_kv_heads
  std::int64_t total_q = 0;
  std::int64_t max_seq_q = 0;  // >= every sequence's new tokens
  std::int64_t max_seq_k = 0;  // >= every seq_lens[b]
  float scale = 0.f;
  AttentionOptions options;
};

// Returns false, launching nothing, where the Hopper kernel cannot run the call (not a 9.x GPU, a
// build without sm_90a, an FP8 pool): the caller then gathers K/V (kv_cache_gather) and calls
// flash_attention_varlen. Throws ArgumentError (naming the argument) before any launch.
bool paged_prefill_attention(const PagedPrefillArgs& args, cudaStream_t stream = nullptr);

}  // namespace flashkernel
