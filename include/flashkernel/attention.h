// flash_attention: out = softmax(scale * Q K^T [+ causal mask]) V computed tile by tile with an
// online softmax, never materializing the Nq x Nk score matrix.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

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

// Supported: dtype float16 or bfloat16; head_dim 64 or 128; seq_q, seq_k >= 1 (0 launches
// nothing); every pointer 16-byte aligned and every stride a multiple of 8 elements (the kernel
// moves 16-byte chunks). causal: query i sees keys j <= i + seq_k - seq_q (bottom-right
// alignment; a row that sees no key gets out = 0 and lse = -inf). scale multiplies QK^T.
// lse (optional, may be null): fp32 [batch, heads_q, seq_q] contiguous, 4-byte aligned, the natural-log
// log-sum-exp of each row's scaled scores. Throws ArgumentError before any launch, CudaError.
void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse,
                     const AttentionShape& shape, DType dtype, bool causal, float scale,
                     cudaStream_t stream = nullptr, AttentionBackend backend = AttentionBackend::kAuto);

}  // namespace flashkernel
