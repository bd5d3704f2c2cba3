// PyTorch bindings of reduce: flashkernel.reduce_sum / reduce_max (dim=None: whole tensor to a
// 0-d tensor; dim=-1: over the last dimension). Output dtype = input dtype, like torch.sum /
// torch.amax for float32, float16 and bfloat16.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>

#include "flashkernel/reduce.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

at::Tensor reduce_whole(const at::Tensor& x, at::Tensor out, DType dtype, ReduceOp op) {
  const std::size_t ws_bytes = call_library([&] { return reduce_workspace_bytes(x.numel()); });
  // The workspace comes from torch's caching allocator: no cudaMalloc on the hot path.
  at::Tensor workspace;
  if (ws_bytes > 0) workspace = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
  call_library([&] {
    reduce_full(x.data_ptr(), out.data_ptr(), x.numel(), dtype, op, ws_bytes ? workspace.data_ptr() : nullptr,
                ws_bytes, stream_of(x));
  });
  return out;
}

at::Tensor reduce_impl(const at::Tensor& x, std::optional<int64_t> dim, ReduceOp op, const char* kOp) {
  check_cuda(x, kOp, "x");
  const DType dtype = to_dtype(x, kOp, "x");
  check_contiguous(x, kOp, "x");
  // A 0-d tensor counts as 1-D for dim (as in torch): dim may be 0 or -1 there.
  const int64_t ndim = std::max<int64_t>(x.dim(), 1);
  bool whole = !dim.has_value();
  if (dim.has_value()) {
    TORCH_CHECK_VALUE(*dim >= -ndim && *dim < ndim, kOp, ": argument 'dim' is out of range: got ", *dim,
                      " for a tensor of shape ", x.sizes(), " (expected -1, ", ndim - 1, " or None)");
    const int64_t d = *dim < 0 ? *dim + ndim : *dim;
    TORCH_CHECK_VALUE(d == ndim - 1, kOp, ": argument 'dim' must be the last dimension (-1 or ", ndim - 1,
                      ") or None, got ", *dim, " for a tensor of shape ", x.sizes());
    whole = x.dim() <= 1;  // the last dim of a 1-D tensor is all of it
  }
  const c10::cuda::CUDAGuard guard(x.device());
  if (whole) {
    TORCH_CHECK_VALUE(op != ReduceOp::kMax || x.numel() > 0, kOp,
                      ": argument 'x' is empty; its max is undefined (max has no identity element)");
    return reduce_whole(x, at::empty({}, x.options()), dtype, op);
  }
  const auto out_shape = x.sizes().slice(0, x.dim() - 1);
  const int64_t cols = x.size(-1);
  int64_t rows = 1;
  for (int64_t s : out_shape) rows *= s;
  TORCH_CHECK_VALUE(op != ReduceOp::kMax || cols > 0 || rows == 0, kOp,
                    ": argument 'x' has an empty last dimension (shape ", x.sizes(),
                    "); the max of an empty row is undefined");
  at::Tensor out = at::empty(out_shape, x.options());
  // One row: the full reduction spreads it over the whole GPU instead of one block.
  if (rows == 1) return reduce_whole(x, out, dtype, op);
  call_library([&] { reduce_rows(x.data_ptr(), out.data_ptr(), rows, cols, dtype, op, stream_of(x)); });
  return out;
}

at::Tensor reduce_sum_cuda(const at::Tensor& x, std::optional<int64_t> dim) {
  return reduce_impl(x, dim, ReduceOp::kSum, "flashkernel.reduce_sum");
}

at::Tensor reduce_max_cuda(const at::Tensor& x, std::optional<int64_t> dim) {
  return reduce_impl(x, dim, ReduceOp::kMax, "flashkernel.reduce_max");
}

void impl_kernels(torch::Library& m) {
  m.impl("reduce_sum", &reduce_sum_cuda);
  m.impl("reduce_max", &reduce_max_cuda);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.def("reduce_sum(Tensor x, int? dim=None) -> Tensor");
  m.def("reduce_max(Tensor x, int? dim=None) -> Tensor");
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
