// RoPE host API: argument validation shared by both variants, and the table variant's dispatch.
#include <cmath>
#include <string>

#include "common/arg_check.h"
#include "rope/rope_kernel.cuh"

namespace flashkernel {
namespace rope_detail {

namespace {

void check_tensor(const char* op, const char* name, const RopeTensor& x, const RopeShape& s) {
  detail::require(x.heads >= 0, op, name, "must have >= 0 heads, got " + std::to_string(x.heads));
  const std::int64_t numel = s.batch * s.seq * x.heads * s.head_dim;
  detail::require_device_pointer(x.in, numel, op, name);
  detail::require(numel == 0 || x.out != nullptr, op, name, "output must be a non-null device pointer");
  if (x.in == x.out) {
    detail::require(x.in_stride_b == x.out_stride_b && x.in_stride_h == x.out_stride_h &&
                        x.in_stride_n == x.out_stride_n,
                    op, name, "in-place use needs identical input and output strides");
  }
}

}  // namespace

bool check_common(const char* op, const RopeTensor& q, const RopeTensor& k, const RopeShape& s, RopeStyle style) {
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
  check_tensor(op, "q", q, s);
  check_tensor(op, "k", k, s);
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
  if (!rope_detail::check_common(kOp, q, k, shape, style)) return;
  detail::require(table_positions >= 1, kOp, "cos", "table must have >= 1 rows, got " + std::to_string(table_positions));
  detail::require(cos != nullptr, kOp, "cos", "must be a non-null device pointer");
  detail::require(sin != nullptr, kOp, "sin", "must be a non-null device pointer");
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
