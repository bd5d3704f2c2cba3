// PyTorch bindings of RoPE: table variant (rope / rope_), fused variant (rope_fused / rope_fused_)
// and the table builder (rope_cache_fill, allocated by the Python wrapper rope_cache).
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty_like.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "flashkernel/rope.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

RopeStyle parse_style(const std::string& style, const char* op) {
  constexpr std::pair<std::string_view, RopeStyle> kStyles[] = {{"neox", RopeStyle::kNeox}, {"gptj", RopeStyle::kGptj}};
  return parse_choice(style, kStyles, op, "style");
}

struct Checked {
  RopeShape shape;
  DType dtype;
  RopePositions positions;
  at::Tensor positions_contig;  // keeps the contiguous copy alive for the launch
};

// Checks q, k and positions; rotary_dim is filled in by the caller.
Checked check_qk(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& positions,
                 const char* op) {
  check_cuda(q, op, "q");
  check_cuda_on_device_of(k, q, op, "k", "q");
  check_dim(q, 4, op, "q", "[batch, heads, seq, head_dim]");
  check_dim(k, 4, op, "k", "[batch, heads, seq, head_dim]");
  check_same_dtype(q, k, op, "q", "k");
  Checked c;
  c.dtype = to_dtype(q, op, "q");
  TORCH_CHECK_VALUE(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3), op,
                    ": arguments 'q' and 'k' must agree on batch, seq and head_dim (dims 0, 2, 3), got shapes ",
                    q.sizes(), " and ", k.sizes());
  TORCH_CHECK_VALUE(q.stride(3) == 1, op, ": argument 'q' must have a contiguous last dimension (stride 1), got strides ",
                    q.strides());
  TORCH_CHECK_VALUE(k.stride(3) == 1, op, ": argument 'k' must have a contiguous last dimension (stride 1), got strides ",
                    k.strides());
  c.shape.batch = q.size(0);
  c.shape.seq = q.size(2);
  c.shape.head_dim = q.size(3);
  if (positions.has_value() && positions->defined()) {
    const at::Tensor& pos = *positions;
    check_cuda_on_device_of(pos, q, op, "positions", "q");
    TORCH_CHECK_TYPE(pos.scalar_type() == at::kInt || pos.scalar_type() == at::kLong, op,
                     ": argument 'positions' must be int32 or int64, got ", pos.scalar_type());
    const bool flat = pos.dim() == 1 && pos.size(0) == c.shape.seq;
    const bool per_batch = pos.dim() == 2 && pos.size(0) == c.shape.batch && pos.size(1) == c.shape.seq;
    TORCH_CHECK_VALUE(flat || per_batch, op, ": argument 'positions' must have shape [seq] = [", c.shape.seq,
                      "] or [batch, seq] = [", c.shape.batch, ", ", c.shape.seq, "], got ", pos.sizes());
    c.positions_contig = pos.contiguous();
    c.positions.data = c.positions_contig.data_ptr();
    c.positions.is_int64 = pos.scalar_type() == at::kLong;
    c.positions.per_batch = per_batch;
  }
  return c;
}

RopeTensor view_of(const at::Tensor& in, const at::Tensor& out) {
  RopeTensor t;
  t.in = in.data_ptr();
  t.out = out.data_ptr();
  t.heads = in.size(1);
  t.in_stride_b = in.stride(0);
  t.in_stride_h = in.stride(1);
  t.in_stride_n = in.stride(2);
  t.out_stride_b = out.stride(0);
  t.out_stride_h = out.stride(1);
  t.out_stride_n = out.stride(2);
  return t;
}

std::int64_t resolve_rotary_dim(const std::optional<int64_t>& rotary_dim, std::int64_t head_dim) {
  return rotary_dim.has_value() ? *rotary_dim : head_dim;
}

// Validates the tables and that every position indexes a row of them. The range check reads the
// positions back to the host (one small reduction and a sync) so a bad position is an error, not
// a silent NaN; during CUDA-graph capture a sync is impossible, and the kernel's own guard (NaN
// output for out-of-table positions, never an out-of-bounds read) is what remains.
void check_tables(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin, Checked& c,
                  const std::optional<int64_t>& rotary_dim, const char* op) {
  check_cuda_on_device_of(cos, q, op, "cos", "q");
  check_cuda_on_device_of(sin, q, op, "sin", "q");
  check_dim(cos, 2, op, "cos", "[max_positions, rotary_dim / 2]");
  check_dim(sin, 2, op, "sin", "[max_positions, rotary_dim / 2]");
  check_same_shape(cos, sin, op, "cos", "sin");
  check_same_dtype(cos, sin, op, "cos", "sin");
  to_dtype(cos, op, "cos");
  check_contiguous(cos, op, "cos");
  check_contiguous(sin, op, "sin");
  const std::int64_t table_rotary = 2 * cos.size(1);
  c.shape.rotary_dim = rotary_dim.has_value() ? *rotary_dim : table_rotary;
  TORCH_CHECK_VALUE(c.shape.rotary_dim == table_rotary, op, ": argument 'rotary_dim' (", c.shape.rotary_dim,
                    ") must equal 2 * cos.size(1) = ", table_rotary, " (the tables hold rotary_dim / 2 columns)");
  if (c.positions.data != nullptr && c.positions_contig.numel() > 0) {
    if (!stream_is_capturing(stream_of(q))) {
      auto [lo, hi] = at::aminmax(c.positions_contig);
      const std::int64_t min_pos = lo.item<int64_t>(), max_pos = hi.item<int64_t>();
      TORCH_CHECK_VALUE(min_pos >= 0 && max_pos < cos.size(0), op, ": argument 'positions' has values in [", min_pos,
                        ", ", max_pos, "] but the cos/sin tables hold positions [0, ", cos.size(0), ")");
    }
  }
}

void run_table(const at::Tensor& q, const at::Tensor& k, const at::Tensor& qo, const at::Tensor& ko,
               const at::Tensor& cos, const at::Tensor& sin, const Checked& c, RopeStyle style) {
  DType table_dtype = to_dtype(cos, "flashkernel.rope", "cos");
  call_library([&] {
    rope(view_of(q, qo), view_of(k, ko), c.shape, c.positions, cos.data_ptr(), sin.data_ptr(), cos.size(0),
         table_dtype, style, c.dtype, stream_of(q));
  });
}

std::tuple<at::Tensor, at::Tensor> rope_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                           const at::Tensor& sin, const std::optional<at::Tensor>& positions,
                                           const std::string& style, std::optional<int64_t> rotary_dim) {
  constexpr const char* kOp = "flashkernel.rope";
  RopeStyle st = parse_style(style, kOp);
  Checked c = check_qk(q, k, positions, kOp);
  const c10::cuda::CUDAGuard guard(q.device());
  check_tables(q, cos, sin, c, rotary_dim, kOp);
  at::Tensor qo = at::empty_like(q), ko = at::empty_like(k);
  run_table(q, k, qo, ko, cos, sin, c, st);
  return {qo, ko};
}

void rope_inplace_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                     const std::optional<at::Tensor>& positions, const std::string& style,
                     std::optional<int64_t> rotary_dim) {
  constexpr const char* kOp = "flashkernel.rope_";
  RopeStyle st = parse_style(style, kOp);
  Checked c = check_qk(q, k, positions, kOp);
  const c10::cuda::CUDAGuard guard(q.device());
  check_tables(q, cos, sin, c, rotary_dim, kOp);
  run_table(q, k, q, k, cos, sin, c, st);
}

void run_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& qo, const at::Tensor& ko,
               const Checked& c, double base, RopeStyle style) {
  call_library([&] {
    rope_fused(view_of(q, qo), view_of(k, ko), c.shape, c.positions, base, style, c.dtype, stream_of(q));
  });
}

std::tuple<at::Tensor, at::Tensor> rope_fused_op(const at::Tensor& q, const at::Tensor& k,
                                                 const std::optional<at::Tensor>& positions, double base,
                                                 const std::string& style, std::optional<int64_t> rotary_dim) {
  constexpr const char* kOp = "flashkernel.rope_fused";
  RopeStyle st = parse_style(style, kOp);
  Checked c = check_qk(q, k, positions, kOp);
  c.shape.rotary_dim = resolve_rotary_dim(rotary_dim, c.shape.head_dim);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor qo = at::empty_like(q), ko = at::empty_like(k);
  run_fused(q, k, qo, ko, c, base, st);
  return {qo, ko};
}

void rope_fused_inplace_op(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& positions,
                           double base, const std::string& style, std::optional<int64_t> rotary_dim) {
  constexpr const char* kOp = "flashkernel.rope_fused_";
  RopeStyle st = parse_style(style, kOp);
  Checked c = check_qk(q, k, positions, kOp);
  c.shape.rotary_dim = resolve_rotary_dim(rotary_dim, c.shape.head_dim);
  const c10::cuda::CUDAGuard guard(q.device());
  run_fused(q, k, q, k, c, base, st);
}

void rope_cache_fill_op(const at::Tensor& cos, const at::Tensor& sin, double base) {
  constexpr const char* kOp = "flashkernel.rope_cache";
  check_cuda(cos, kOp, "cos");
  check_cuda_on_device_of(sin, cos, kOp, "sin", "cos");
  check_dim(cos, 2, kOp, "cos", "[max_positions, rotary_dim / 2]");
  check_same_shape(cos, sin, kOp, "cos", "sin");
  check_same_dtype(cos, sin, kOp, "cos", "sin");
  DType dtype = to_dtype(cos, kOp, "cos");
  check_contiguous(cos, kOp, "cos");
  check_contiguous(sin, kOp, "sin");
  const c10::cuda::CUDAGuard guard(cos.device());
  call_library([&] {
    rope_cache(cos.data_ptr(), sin.data_ptr(), cos.size(0), 2 * cos.size(1), base, dtype, stream_of(cos));
  });
}

void impl_kernels(torch::Library& m) {
  m.impl("rope", &rope_op);
  m.impl("rope_", &rope_inplace_op);
  m.impl("rope_fused", &rope_fused_op);
  m.impl("rope_fused_", &rope_fused_inplace_op);
  m.impl("rope_cache_fill", &rope_cache_fill_op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.def("rope(Tensor q, Tensor k, Tensor cos, Tensor sin, Tensor? positions=None, str style=\"neox\", "
        "int? rotary_dim=None) -> (Tensor, Tensor)");
  m.def("rope_(Tensor(a!) q, Tensor(b!) k, Tensor cos, Tensor sin, Tensor? positions=None, str style=\"neox\", "
        "int? rotary_dim=None) -> ()");
  m.def("rope_fused(Tensor q, Tensor k, Tensor? positions=None, float base=10000.0, str style=\"neox\", "
        "int? rotary_dim=None) -> (Tensor, Tensor)");
  m.def("rope_fused_(Tensor(a!) q, Tensor(b!) k, Tensor? positions=None, float base=10000.0, "
        "str style=\"neox\", int? rotary_dim=None) -> ()");
  m.def("rope_cache_fill(Tensor(a!) cos, Tensor(b!) sin, float base) -> ()");
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
