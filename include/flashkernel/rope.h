// Rotary position embedding (RoPE) applied to q and k in one launch.
//
// Angle convention (shared by the table builder, the fused kernel and the tests):
//   inv_freq[i] = float(base ** (-2i / rotary_dim))     computed in double, rounded once to fp32
//   theta(p, i) = float(p) * inv_freq[i]                 one fp32 multiply (as HuggingFace does)
//   cos/sin     = sincosf(theta)                         accurate libm version, not __sinf/__cosf,
//                                                        so positions up to 2^17 and beyond stay accurate
// Pairing: kNeox rotates (x[i], x[i + r/2]) (HuggingFace Llama / GPT-NeoX `rotate_half`); kGptj
// rotates (x[2i], x[2i+1]). Either way (a, b) -> (a cos - b sin, b cos + a sin) in fp32.
// Dimensions [rotary_dim, head_dim) are copied unchanged.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel {

enum class RopeStyle : int { kNeox = 0, kGptj = 1 };

// Largest rotary_dim accepted (the fused kernel passes inv_freq in its launch parameters).
constexpr std::int64_t kRopeMaxRotaryDim = 512;

// One of q / k: a [batch, heads, seq, head_dim] view with a contiguous last dimension and any
// other strides (in elements), so [batch, seq, heads, head_dim] storage works through its view.
// `out` may equal `in` (in place); then only the rotary dimensions are written. Every pointer is
// aligned to its element size. q and k are rotated by different threads of one launch, so an
// output must not overlap the other tensor (nor, out of place, partially overlap its own input):
// the same tensor as q and k in place is an ArgumentError, head slices of one fused qkv buffer are
// fine, and identical inputs with separate outputs are fine.
struct RopeTensor {
  const void* in = nullptr;
  void* out = nullptr;
  std::int64_t heads = 0;
  std::int64_t in_stride_b = 0, in_stride_h = 0, in_stride_n = 0;
  std::int64_t out_stride_b = 0, out_stride_h = 0, out_stride_n = 0;
};

// Token positions: nullptr means 0..seq-1 for every sequence; otherwise `seq` (per_batch=false)
// or `batch * seq` (per_batch=true, row-major [batch, seq]) int32 or int64 values.
struct RopePositions {
  const void* data = nullptr;
  bool is_int64 = false;
  bool per_batch = false;
};

// Shape shared by q and k (they may differ only in their number of heads: GQA/MQA).
struct RopeShape {
  std::int64_t batch = 0, seq = 0, head_dim = 0, rotary_dim = 0;
};

// Fills cos and sin, each [max_positions, rotary_dim/2] contiguous of `dtype`, with the angle
// convention above (computed in fp32, rounded once to `dtype`).
void rope_cache(void* cos, void* sin, std::int64_t max_positions, std::int64_t rotary_dim, double base,
                DType dtype, cudaStream_t stream = nullptr);

// Rotates q and k with precomputed tables cos/sin ([table_positions, rotary_dim/2], contiguous,
// of `table_dtype`, which is float32 or `dtype`). Positions outside [0, table_positions) are the
// caller's error; the kernel never reads outside the table and writes NaN for such tokens.
void rope(const RopeTensor& q, const RopeTensor& k, const RopeShape& shape, const RopePositions& positions,
          const void* cos, const void* sin, std::int64_t table_positions, DType table_dtype, RopeStyle style,
          DType dtype, cudaStream_t stream = nullptr);

// Same rotation with the angles computed in the kernel from `base` (no table).
void rope_fused(const RopeTensor& q, const RopeTensor& k, const RopeShape& shape, const RopePositions& positions,
                double base, RopeStyle style, DType dtype, cudaStream_t stream = nullptr);

}  // namespace flashkernel
