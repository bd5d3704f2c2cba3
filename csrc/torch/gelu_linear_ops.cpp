// PyTorch binding of gelu_linear: GeLU(x @ weight^T + bias) with F.gelu/F.linear semantics.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flashkernel/gelu_linear.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

constexpr std::pair<std::string_view, GeluApproximation> kApproximations[] = {{"none", GeluApproximation::kNone},
                                                                              {"tanh", GeluApproximation::kTanh}};
constexpr std::pair<std::string_view, GeluLinearBackend> kBackends[] = {
    {"auto", GeluLinearBackend::kAuto},           {"sm80", GeluLinearBackend::kSm80},
    {"sm90_wide", GeluLinearBackend::kSm90Wide},   {"sm90_mid", GeluLinearBackend::kSm90Mid},
    {"sm90_narrow", GeluLinearBackend::kSm90Narrow}, {"sm90_pingpong", GeluLinearBackend::kSm90PingPong}};

at::Tensor gelu_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            const std::string& approximate, const std::string& backend) {
  constexpr const char* kOp = "flashkernel.gelu_linear";
  const GeluApproximation act = parse_choice(approximate, kApproximations, kOp, "approximate");
  const GeluLinearBackend which = parse_choice(backend, kBackends, kOp, "backend");
  check_cuda(x, kOp, "x");
  check_cuda_on_device_of(weight, x, kOp, "weight", "x");
  const DType dtype = to_dtype(x, kOp, "x", /*allow_fp32=*/false);
  check_same_dtype(x, weight, kOp, "x", "weight");
  check_dim(weight, 2, kOp, "weight", "[out_features, in_features]");
  TORCH_CHECK_VALUE(x.dim() >= 1, kOp, ": argument 'x' must have at least 1 dimension [..., in_features], got a 0-D tensor");
  const int64_t k = weight.size(1), n = weight.size(0);
  // The kernels move 16-byte rows: both feature counts must be multiples of 8 elements.
  TORCH_CHECK_VALUE(k > 0 && k % 8 == 0, kOp, ": argument 'weight' must have in_features (size 1) a positive ",
                    "multiple of 8, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(n > 0 && n % 8 == 0, kOp, ": argument 'weight' must have out_features (size 0) a positive ",
                    "multiple of 8, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(x.size(-1) == k, kOp, ": argument 'x' must have last dimension in_features = weight.size(1) = ", k,
                    ", got shape ", x.sizes());
  check_contiguous(x, kOp, "x");
  check_contiguous(weight, kOp, "weight");
  const void* bias_ptr = nullptr;
  if (bias.has_value() && bias->defined()) {
    check_cuda_on_device_of(*bias, x, kOp, "bias", "x");
    check_same_dtype(x, *bias, kOp, "x", "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, kOp, ": argument 'bias' must have shape [", n,
                      "] (out_features), got ", bias->sizes());
    check_contiguous(*bias, kOp, "bias");
    bias_ptr = bias->data_ptr();
  }
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  const int64_t m = k > 0 ? x.numel() / k : 0;
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(out_shape, x.options());
  call_library([&] {
    gelu_linear(x.data_ptr(), weight.data_ptr(), bias_ptr, out.data_ptr(), m, n, k, dtype, act, stream_of(x), which);
  });
  return out;
}

void impl_kernels(torch::Library& m) {
  m.impl("gelu_linear", &gelu_linear_cuda);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.def("gelu_linear(Tensor x, Tensor weight, Tensor? bias=None, *, str approximate='none', str backend='auto') -> Tensor");
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
