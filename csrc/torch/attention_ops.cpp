// PyTorch binding of flash_attention: flashkernel::flash_attention(q, k, v, causal, scale,
// return_lse, backend) -> (out, lse). lse is an empty tensor unless return_lse; backend is "auto",
// "sm80" or "sm90" (AttentionBackend).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <optional>

#include "flashkernel/attention.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

constexpr const char* kOp = "flashkernel.flash_attention";

// The kernel moves 16-byte chunks: it needs 16-byte aligned rows. A view that is not (an odd
// storage offset, a stride not a multiple of 8) is copied once into a fresh contiguous tensor.
at::Tensor kernel_ready(const at::Tensor& t) {
  bool ok = reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int i = 0; i < 3; ++i) ok = ok && t.stride(i) % 8 == 0;
  if (ok) return t;
  return t.clone(at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor> flash_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        bool causal, std::optional<double> scale, bool return_lse,
                                                        c10::string_view backend) {
  check_cuda(q, kOp, "q");
  check_cuda_on_device_of(k, q, kOp, "k", "q");
  check_cuda_on_device_of(v, q, kOp, "v", "q");
  check_dim(q, 4, kOp, "q", "[batch, heads_q, seq_q, head_dim]");
  check_dim(k, 4, kOp, "k", "[batch, heads_kv, seq_k, head_dim]");
  check_dim(v, 4, kOp, "v", "[batch, heads_kv, seq_k, head_dim]");
  DType dtype = to_dtype(q, kOp, "q", /*allow_fp32=*/false);
  check_same_dtype(q, k, kOp, "q", "k");
  check_same_dtype(q, v, kOp, "q", "v");
  check_same_shape(k, v, kOp, "k", "v");
  TORCH_CHECK_VALUE(q.size(0) == k.size(0), kOp, ": argument 'k' must have the batch size of 'q' (", q.size(0),
                    "), got ", k.size(0));
  TORCH_CHECK_VALUE(q.size(3) == k.size(3), kOp, ": argument 'k' must have the head_dim of 'q' (", q.size(3),
                    "), got ", k.size(3));
  TORCH_CHECK_VALUE(q.size(3) == 64 || q.size(3) == 128, kOp, ": argument 'q' must have head_dim 64 or 128, got ",
                    q.size(3));
  TORCH_CHECK_VALUE(k.size(1) >= 1 && q.size(1) % k.size(1) == 0, kOp, ": argument 'q' must have a number of heads (",
                    q.size(1), ") that is a multiple of the heads of 'k' (", k.size(1), ")");
  check_last_dim_contiguous(q, kOp, "q");
  check_last_dim_contiguous(k, kOp, "k");
  check_last_dim_contiguous(v, kOp, "v");
  const double sc = scale.has_value() ? *scale : 1.0 / std::sqrt(double(q.size(3)));
  TORCH_CHECK_VALUE(std::isfinite(sc), kOp, ": argument 'scale' must be finite, got ", sc);

  constexpr std::pair<std::string_view, AttentionBackend> kBackends[] = {
      {"auto", AttentionBackend::kAuto}, {"sm80", AttentionBackend::kSm80}, {"sm90", AttentionBackend::kSm90}};
  const AttentionBackend which = parse_choice(backend, kBackends, kOp, "backend");

  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor qq = kernel_ready(q), kk = kernel_ready(k), vv = kernel_ready(v);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = return_lse ? at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat))
                              : at::empty({0}, q.options().dtype(at::kFloat));
  AttentionShape s;
  s.batch = q.size(0);
  s.heads_q = q.size(1);
  s.heads_kv = k.size(1);
  s.seq_q = q.size(2);
  s.seq_k = k.size(2);
  s.head_dim = q.size(3);
  for (int i = 0; i < 3; ++i) {
    s.q_stride[i] = qq.stride(i);
    s.k_stride[i] = kk.stride(i);
    s.v_stride[i] = vv.stride(i);
    s.o_stride[i] = out.stride(i);
  }
  if (q.numel() == 0) return {out, lse};
  call_library([&] {
    flash_attention(qq.data_ptr(), kk.numel() ? kk.data_ptr() : nullptr, vv.numel() ? vv.data_ptr() : nullptr,
                    out.data_ptr(), return_lse ? lse.data_ptr<float>() : nullptr, s, dtype, causal, float(sc),
                    stream_of(q), which);
  });
  return {out, lse};
}

void impl_kernels(torch::Library& m) {
  m.impl("flash_attention", &flash_attention_cuda);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.def("flash_attention(Tensor q, Tensor k, Tensor v, bool causal=False, float? scale=None, "
        "bool return_lse=False, str backend=\"auto\") -> (Tensor, Tensor)");
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
