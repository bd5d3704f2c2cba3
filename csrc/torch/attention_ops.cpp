// PyTorch bindings of flash_attention: flashkernel::flash_attention(q, k, v, causal, scale,
// return_lse, backend, window_left, window_right, softcap) -> (out, lse) and
// flashkernel::flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
// max_seqlen_k, causal, scale, return_lse, window_left, window_right, softcap) -> (out, lse).
// lse is an empty tensor unless return_lse; backend is "auto", "sm80" or "sm90"
// (AttentionBackend).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <utility>
#include <optional>

#include "flashkernel/attention.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

constexpr const char* kOp = "flashkernel.flash_attention";
constexpr const char* kOpVarlen = "flashkernel.flash_attention_varlen";

// The kernel moves 16-byte chunks: it needs 16-byte aligned rows. A view that is not (an odd
// storage offset, a stride not a multiple of 8) is copied once into a fresh contiguous tensor.
at::Tensor kernel_ready(const at::Tensor& t) {
  bool ok = reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int i = 0; i + 1 < t.dim(); ++i) ok = ok && t.stride(i) % 8 == 0;
  if (ok) return t;
  return t.clone(at::MemoryFormat::Contiguous);
}

// The rules both ops share (the Python fake implementations apply the same, with the same
// messages): dtype, matching shapes, head dims, GQA, contiguous last dimension; returns the dtype.
DType check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t dims) {
  check_cuda(q, op, "q");
  check_cuda_on_device_of(k, q, op, "k", "q");
  check_cuda_on_device_of(v, q, op, "v", "q");
  const char* layout_q = dims == 4 ? "[batch, heads_q, seq_q, head_dim]" : "[total_q, heads_q, head_dim]";
  const char* layout_kv = dims == 4 ? "[batch, heads_kv, seq_k, head_dim]" : "[total_k, heads_kv, head_dim]";
  check_dim(q, dims, op, "q", layout_q);
  check_dim(k, dims, op, "k", layout_kv);
  check_dim(v, dims, op, "v", layout_kv);
  DType dtype = to_dtype(q, op, "q", /*allow_fp32=*/false);
  check_same_dtype(q, k, op, "q", "k");
  check_same_dtype(q, v, op, "q", "v");
  check_same_shape(k, v, op, "k", "v");
  if (dims == 4) {
    TORCH_CHECK_VALUE(q.size(0) == k.size(0), op, ": argument 'k' must have the batch size of 'q' (", q.size(0),
                      "), got ", k.size(0));
  }
  const int64_t d = q.size(dims - 1);
  TORCH_CHECK_VALUE(d == k.size(dims - 1), op, ": argument 'k' must have the head_dim of 'q' (", d, "), got ",
                    k.size(dims - 1));
  TORCH_CHECK_VALUE(d == 32 || d == 64 || d == 80 || d == 96 || d == 128 || d == 256, op,
                    ": argument 'q' must have head_dim 32, 64, 80, 96, 128 or 256, got ", d);
  TORCH_CHECK_VALUE(k.size(1) >= 1 && q.size(1) % k.size(1) == 0, op, ": argument 'q' must have a number of heads (",
                    q.size(1), ") that is a multiple of the heads of 'k' (", k.size(1), ")");
  check_last_dim_contiguous(q, op, "q");
  check_last_dim_contiguous(k, op, "k");
  check_last_dim_contiguous(v, op, "v");
  return dtype;
}

double scale_or_default(const char* op, std::optional<double> scale, int64_t head_dim) {
  const double sc = scale.has_value() ? *scale : 1.0 / std::sqrt(double(head_dim));
  TORCH_CHECK_VALUE(std::isfinite(sc), op, ": argument 'scale' must be finite, got ", sc);
  return sc;
}

AttentionBackend backend_of(const char* op, c10::string_view backend) {
  constexpr std::pair<std::string_view, AttentionBackend> kBackends[] = {
      {"auto", AttentionBackend::kAuto}, {"sm80", AttentionBackend::kSm80}, {"sm90", AttentionBackend::kSm90}};
  return parse_choice(backend, kBackends, op, "backend");
}

AttentionOptions options_of(const char* op, int64_t window_left, int64_t window_right, double softcap) {
  TORCH_CHECK_VALUE(std::isfinite(softcap) && softcap >= 0.0, op,
                    ": argument 'softcap' must be a finite number >= 0, got ", softcap);
  AttentionOptions o;
  o.window_left = window_left;
  o.window_right = window_right;
  o.softcap = static_cast<float>(softcap);
  return o;
}

std::tuple<at::Tensor, at::Tensor> flash_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        bool causal, std::optional<double> scale, bool return_lse,
                                                        c10::string_view backend, int64_t window_left,
                                                        int64_t window_right, double softcap) {
  const DType dtype = check_qkv(kOp, q, k, v, 4);
  const double sc = scale_or_default(kOp, scale, q.size(3));
  const AttentionOptions options = options_of(kOp, window_left, window_right, softcap);

  const AttentionBackend which = backend_of(kOp, backend);

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
                    options, stream_of(q), which);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> flash_attention_varlen_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_seqlens_q,
    const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, bool causal,
    std::optional<double> scale, bool return_lse, int64_t window_left, int64_t window_right, double softcap,
    c10::string_view backend) {
  const DType dtype = check_qkv(kOpVarlen, q, k, v, 3);
  for (auto [t, name] : {std::pair{&cu_seqlens_q, "cu_seqlens_q"}, std::pair{&cu_seqlens_k, "cu_seqlens_k"}}) {
    TORCH_CHECK_VALUE(t->dim() == 1 && t->scalar_type() == at::kInt, kOpVarlen, ": argument '", name,
                      "' must be a 1-D int32 tensor [batch + 1]");
    TORCH_CHECK_VALUE(t->numel() >= 1, kOpVarlen, ": argument '", name, "' must have batch + 1 >= 1 elements, got 0");
    check_cuda_on_device_of(*t, q, kOpVarlen, name, "q");
  }
  TORCH_CHECK_VALUE(cu_seqlens_q.numel() == cu_seqlens_k.numel(), kOpVarlen,
                    ": arguments 'cu_seqlens_q' and 'cu_seqlens_k' must have the same length, got ",
                    cu_seqlens_q.numel(), " and ", cu_seqlens_k.numel());
  TORCH_CHECK_VALUE(max_seqlen_q >= 0, kOpVarlen, ": argument 'max_seqlen_q' must be >= 0, got ", max_seqlen_q);
  TORCH_CHECK_VALUE(max_seqlen_k >= 0, kOpVarlen, ": argument 'max_seqlen_k' must be >= 0, got ", max_seqlen_k);
  const double sc = scale_or_default(kOpVarlen, scale, q.size(2));
  const AttentionOptions options = options_of(kOpVarlen, window_left, window_right, softcap);
  const AttentionBackend which = backend_of(kOpVarlen, backend);

  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor qq = kernel_ready(q), kk = kernel_ready(k), vv = kernel_ready(v);
  at::Tensor cq = cu_seqlens_q.contiguous(), ck = cu_seqlens_k.contiguous();
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = return_lse ? at::empty({q.size(1), q.size(0)}, q.options().dtype(at::kFloat))
                              : at::empty({0}, q.options().dtype(at::kFloat));
  if (q.numel() == 0) return {out, lse};
  // Rows past the sequences (total_q larger than cu_seqlens_q's last offset) are written by no
  // one: zero them so the output is defined.
  out.zero_();
  if (return_lse) lse.fill_(-std::numeric_limits<float>::infinity());
  AttentionVarlenShape s;
  s.batch = cu_seqlens_q.numel() - 1;
  s.heads_q = q.size(1);
  s.heads_kv = k.size(1);
  s.head_dim = q.size(2);
  s.total_q = q.size(0);
  s.total_k = k.size(0);
  s.max_seq_q = max_seqlen_q;
  s.max_seq_k = max_seqlen_k;
  s.cu_seqlens_q = cq.data_ptr<std::int32_t>();
  s.cu_seqlens_k = ck.data_ptr<std::int32_t>();
  const at::Tensor* ts[4] = {&qq, &kk, &vv, &out};
  std::int64_t* st[4] = {s.q_stride, s.k_stride, s.v_stride, s.o_stride};
  for (int i = 0; i < 4; ++i) {
    st[i][0] = ts[i]->stride(0);
    st[i][1] = ts[i]->stride(1);
  }
  call_library([&] {
    flash_attention_varlen(qq.data_ptr(), kk.numel() ? kk.data_ptr() : nullptr, vv.numel() ? vv.data_ptr() : nullptr,
                           out.data_ptr(), return_lse ? lse.data_ptr<float>() : nullptr, s, dtype, causal, float(sc),
                           options, stream_of(q), which);
  });
  return {out, lse};
}

void impl_kernels(torch::Library& m) {
  m.impl("flash_attention", &flash_attention_cuda);
  m.impl("flash_attention_varlen", &flash_attention_varlen_cuda);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.def("flash_attention(Tensor q, Tensor k, Tensor v, bool causal=False, float? scale=None, "
        "bool return_lse=False, str backend=\"auto\", int window_left=-1, int window_right=-1, "
        "float softcap=0.0) -> (Tensor, Tensor)");
  m.def("flash_attention_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
        "int max_seqlen_q, int max_seqlen_k, bool causal=False, float? scale=None, bool return_lse=False, "
        "int window_left=-1, int window_right=-1, float softcap=0.0, str backend=\"auto\") -> (Tensor, Tensor)");
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
