// PyTorch bindings of add_layernorm and add_rms_norm:
//   flashkernel.add_layernorm(x, residual, bias, weight, ln_bias, eps) -> (out, residual_out)
//   flashkernel.add_rms_norm(x, residual, weight, eps) -> (out, residual_out)
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "flashkernel/layernorm.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

void check_vector(const char* op, const std::optional<at::Tensor>& t, const at::Tensor& x, const char* name) {
  if (!t.has_value()) return;
  check_cuda_on_device_of(*t, x, op, name, "x");
  check_same_dtype(x, *t, op, "x", name);
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == x.size(-1), op, ": argument '", name, "' must have shape [",
                    x.size(-1), "] (x's last dimension), got ", t->sizes());
  check_contiguous(*t, op, name);
}

// Both ops: the checks of x, residual and the [C] vectors, then the library call with fresh
// (out, residual_out) tensors.
std::tuple<at::Tensor, at::Tensor> add_norm_cuda(const char* op, bool rms, const at::Tensor& x,
                                                 const std::optional<at::Tensor>& residual,
                                                 const std::optional<at::Tensor>& bias,
                                                 const std::optional<at::Tensor>& weight,
                                                 const std::optional<at::Tensor>& ln_bias, double eps) {
  check_cuda(x, op, "x");
  const DType dtype = to_dtype(x, op, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) >= 1, op, ": argument 'x' must have a non-empty last dimension, got ",
                    x.sizes());
  check_contiguous(x, op, "x");
  if (residual.has_value()) {
    const at::Tensor& r = residual.value();
    check_cuda_on_device_of(r, x, op, "residual", "x");
    check_same_dtype(x, r, op, "x", "residual");
    const bool same_shape = r.dim() == x.dim() && r.numel() == x.numel() && r.sizes().equals(x.sizes());
    TORCH_CHECK_VALUE(same_shape, op, ": argument 'residual' must have the shape of 'x' ", x.sizes(), ", got ",
                      r.sizes());
    check_contiguous(r, op, "residual");
  }
  check_vector(op, bias, x, "bias");
  check_vector(op, weight, x, "weight");
  check_vector(op, ln_bias, x, "ln_bias");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x);
  at::Tensor sum = at::empty_like(x);
  const int64_t cols = x.size(-1);
  const int64_t rows = cols ? x.numel() / cols : 0;
  auto ptr = [](const std::optional<at::Tensor>& t) -> const void* { return t.has_value() ? t->data_ptr() : nullptr; };
  call_library([&] {
    if (rms) {
      add_rms_norm(x.data_ptr(), ptr(residual), ptr(weight), out.data_ptr(), sum.data_ptr(), rows, cols,
                   static_cast<float>(eps), dtype, stream_of(x));
    } else {
      add_layernorm(x.data_ptr(), ptr(residual), ptr(bias), ptr(weight), ptr(ln_bias), out.data_ptr(), sum.data_ptr(),
                    rows, cols, static_cast<float>(eps), dtype, stream_of(x));
    }
  });
  return {out, sum};
}

std::tuple<at::Tensor, at::Tensor> add_layernorm_cuda(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                                      const std::optional<at::Tensor>& bias,
                                                      const std::optional<at::Tensor>& weight,
                                                      const std::optional<at::Tensor>& ln_bias, double eps) {
  return add_norm_cuda("flashkernel.add_layernorm", false, x, residual, bias, weight, ln_bias, eps);
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cuda(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                                     const std::optional<at::Tensor>& weight, double eps) {
  return add_norm_cuda("flashkernel.add_rms_norm", true, x, residual, std::nullopt, weight, std::nullopt, eps);
}

void impl_kernels(torch::Library& m) {
  m.impl("add_layernorm", &add_layernorm_cuda);
  m.impl("add_rms_norm", &add_rms_norm_cuda);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.def("add_layernorm(Tensor x, Tensor? residual=None, Tensor? bias=None, Tensor? weight=None, "
        "Tensor? ln_bias=None, float eps=1e-05) -> (Tensor, Tensor)");
  m.def("add_rms_norm(Tensor x, Tensor? residual=None, Tensor? weight=None, float eps=1e-06) -> (Tensor, Tensor)");
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
