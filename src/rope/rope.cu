// RoPE host API: argument validation shared by both variants, and the table variant's dispatch.
#include <cmath>
#include <string>
#include <vector>

#include "common/arg_check.h"
#include "common/memory_overlap.h"
#include "rope/rope_kernel.cuh"

namespace flashkernel {
namespace rope_detail {

namespace {

void check_tensor(const char* op, const char* name, const RopeTensor& x, const RopeShape& s, DType dtype) {
  detail::require(x.heads >= 0, op, name, "must have >= 0 heads, got " + std::to_string(x.heads));
  const std::int64_t numel = s.batch * s.seq * x.heads * s.head_dim;
  detail::require_device_pointer(x.in, numel, op, name);
  detail::require(numel == 0 || x.out != nullptr, op, name, "output must be a non-null device pointer");
  detail::require_element_aligned(x.in, dtype_size(dtype), op, name);
  detail::require_element_aligned(x.out, dtype_size(dtype), op, name);
  if (x.in == x.out) {
    detail::require(x.in_stride_b == x.out_stride_b && x.in_stride_h == x.out_stride_h &&
                        x.in_stride_n == x.out_stride_n,
                    op, name, "in-place use needs identical input and output strides");
  }
}

// The bytes one side (in or out) of q or k covers.
detail::StridedBytes bytes_of(const RopeTensor& x, bool out, const RopeShape& s, DType dtype) {
  const std::int64_t e = static_cast<std::int64_t>(dtype_size(dtype));
  detail::StridedBytes v;
  v.base = reinterpret_cast<std::uintptr_t>(out ? x.out : x.in);
  v.run_bytes = s.head_dim * e;
  v.size = {s.batch, x.heads, s.seq};
  v.stride_bytes = out ? std::vector<std::int64_t>{x.out_stride_b * e, x.out_stride_h * e, x.out_stride_n * e}
                       : std::vector<std::int64_t>{x.in_stride_b * e, x.in_stride_h * e, x.in_stride_n * e};
  return v;
}

// q's and k's heads are rotated by different threads of one launch, so an output that shares
// memory with the other tensor (or, out of place, with its own input) is a race: identical q and
// k in place would be rotated twice. Head slices of one fused qkv buffer do not overlap and pass.
void check_no_overlap(const char* op, const RopeTensor& q, const RopeTensor& k, const RopeShape& s, DType dtype) {
  const detail::StridedBytes q_in = bytes_of(q, false, s, dtype), q_out = bytes_of(q, true, s, dtype);
  const detail::StridedBytes k_in = bytes_of(k, false, s, dtype), k_out = bytes_of(k, true, s, dtype);
  const char* kShared = "shares memory with q: q and k are rotated by different threads of one launch, so they "
                        "must not overlap (pass distinct tensors, or head slices of one buffer that do not overlap)";
  detail::require(!detail::may_overlap(q_out, k_out), op, "k", kShared);
  detail::require(!detail::may_overlap(q_out, k_in) && !detail::may_overlap(k_out, q_in), op, "k", kShared);
  detail::require(q.in == q.out || !detail::may_overlap(q_out, q_in), op, "q",
                  "output partially overlaps its input (in place needs the same pointer and strides)");
  detail::require(k.in == k.out || !detail::may_overlap(k_out, k_in), op, "k",
                  "output partially overlaps its input (in place needs the same pointer and strides)");
}

}  // namespace

bool check_common(const char* op, const RopeTensor& q, const RopeTensor& k, const RopeShape& s, RopeStyle style,
                  const RopePositions& positions, DType dtype) {
  detail::require(style == RopeStyle::kNeox || style == RopeStyle::kGptj, op, "style", "must be neox or gptj");
  detail::require(s.batch >= 0, op, "batch", "must be >= 0, got " + std::to_string(s.batch));
  detail::require(s.seq >= 0, op, "seq", "must be >= 0, got " + std::to_string(s.seq));
  detail::require(s.head_dim >= 1, op, "head_dim", "must be >= 1, got " + std::to_string(s.head_dim));
  detail::require(s.rotary_dim >= 2 && s.rotary_dim % 2 == 0, op, "rotary_dim",
                  "must be even and >= 2, got " + std::to_string(s.rotary_dim));
  detail::require(s.rotary_dim <= s.head_dim, op, "rotary_dim",
                  "must be <= head_dim (" + std::to_string(s.head_dim) + "), got " + std::to_string(s.rotary_dim));
  detail::require(s.rotary_dim <= kRopeMaxRotaryDim, op, "rotary_dim",
                  "must be <= " + std::to_string(kRopeMaxRotaryDim) + ", got " + std::to_string(s.rotary_dim));
  detail::require(dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16, op, "dtype",
                  "must be float32, float16 or bfloat16");
  check_tensor(op, "q", q, s, dtype);
  check_tensor(op, "k", k, s, dtype);
  detail::require_element_aligned(positions.data, positions.is_int64 ? 8 : 4, op, "positions");
  check_no_overlap(op, q, k, s, dtype);
  return s.batch * s.seq * (q.heads + k.heads) > 0;
}

InvFreq inv_freq(double base, std::int64_t rotary_dim) {
  InvFreq inv{};
  for (std::int64_t i = 0; i < rotary_dim / 2; ++i) {
    inv.v[i] = static_cast<float>(1.0 / std::pow(base, double(2 * i) / double(rotary_dim)));
  }
  return inv;
}

Params make_params(const RopeTensor& q, const RopeTensor& k, const RopeShape& s, const RopePositions& pos) {
  Params p{};
  p.q = q;
  p.k = k;
  p.positions = pos;
  p.batch = s.batch;
  p.seq = s.seq;
  p.head_dim = s.head_dim;
  p.rotary_dim = s.rotary_dim;
  return p;
}

}  // namespace rope_detail

void rope(const RopeTensor& q, const RopeTensor& k, const RopeShape& shape, const RopePositions& positions,
          const void* cos, const void* sin, std::int64_t table_positions, DType table_dtype, RopeStyle style,
          DType dtype, cudaStream_t stream) {
  constexpr const char* kOp = "rope";
  if (!rope_detail::check_common(kOp, q, k, shape, style, positions, dtype)) return;
  detail::require(table_positions >= 1, kOp, "cos", "table must have >= 1 rows, got " + std::to_string(table_positions));
  detail::require(cos != nullptr, kOp, "cos", "must be a non-null device pointer");
  detail::require(sin != nullptr, kOp, "sin", "must be a non-null device pointer");
  detail::require_element_aligned(cos, dtype_size(table_dtype), kOp, "cos");
  detail::require_element_aligned(sin, dtype_size(table_dtype), kOp, "sin");
  detail::require(table_dtype == DType::kFloat32 || table_dtype == dtype, kOp, "cos",
                  std::string("table dtype must be float32 or the dtype of q (") + dtype_name(dtype) + "), got " +
                      dtype_name(table_dtype));
  detail::require(positions.data != nullptr || shape.seq <= table_positions, kOp, "cos",
                  "table has " + std::to_string(table_positions) + " positions but seq is " +
                      std::to_string(shape.seq));
  rope_detail::Params p = rope_detail::make_params(q, k, shape, positions);
  p.cos = cos;
  p.sin = sin;
  p.table_positions = table_positions;
  const bool inplace = q.in == q.out && k.in == k.out;
  if (table_dtype == DType::kFloat32) {
    rope_detail::launch_table_f32(p, style, inplace, dtype, stream);
  } else {
    rope_detail::launch_table_same(p, style, inplace, dtype, stream);
  }
}

}  // namespace flashkernel
