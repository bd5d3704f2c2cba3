// flash_attention launcher: validates arguments (naming the bad one) and picks a kernel path by
// architecture and head_dim: the Hopper path (sm90/, TMA + wgmma) on compute capability 9.x when
// it applies, the portable path (sm80/, mma.sync: sm_80 and newer, and fp16 on sm_75) otherwise.
#include <cmath>
#include <cstdint>
#include <string>

#include "attention/attention_params.h"
#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/attention.h"

namespace flashkernel {
namespace {

constexpr const char* kOp = "flash_attention";

void require_strides(const std::int64_t (&stride)[3], const char* name) {
  for (int i = 0; i < 3; ++i) {
    detail::require(stride[i] >= 0 && stride[i] % 8 == 0, kOp, name,
                    "strides must be non-negative multiples of 8 elements (16-byte rows), got " +
                        std::to_string(stride[i]) + " in dimension " + std::to_string(i));
  }
}

void launch(const attention::Params& p, DType dtype, AttentionBackend backend, cudaStream_t stream) {
  detail::require_tensor_core_dtype(kOp, dtype);  // both paths are tensor-core kernels
  const bool d64 = p.shape.head_dim == 64;
  if (backend != AttentionBackend::kSm80) {
    const bool hopper = detail::current_compute_major() == 9;
    detail::require(hopper || backend == AttentionBackend::kAuto, kOp, "backend",
                    "sm90 needs a compute capability 9.x GPU (H100/H200)");
    if (hopper && (d64 ? attention::sm90::launch_d64 : attention::sm90::launch_d128)(p, dtype, stream)) return;
    detail::require(backend == AttentionBackend::kAuto, kOp, "backend",
                    "the sm90 path cannot run here (a build without sm_90a, or tensors TMA cannot describe)");
  }
  (d64 ? attention::sm80::launch_d64 : attention::sm80::launch_d128)(p, dtype, stream);
}

}  // namespace

void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse, const AttentionShape& s,
                     DType dtype, bool causal, float scale, cudaStream_t stream, AttentionBackend backend) {
  detail::require(dtype == DType::kFloat16 || dtype == DType::kBFloat16, kOp, "dtype",
                  std::string("must be float16 or bfloat16, got ") + dtype_name(dtype));
  detail::require(s.head_dim == 64 || s.head_dim == 128, kOp, "head_dim",
                  "must be 64 or 128, got " + std::to_string(s.head_dim));
  detail::require(s.batch >= 0 && s.batch <= 65535, kOp, "batch", "must be in [0, 65535], got " + std::to_string(s.batch));
  detail::require(s.heads_kv >= 1, kOp, "heads_kv", "must be >= 1, got " + std::to_string(s.heads_kv));
  detail::require(s.heads_q >= 1 && s.heads_q <= 65535, kOp, "heads_q",
                  "must be in [1, 65535], got " + std::to_string(s.heads_q));
  detail::require(s.heads_q % s.heads_kv == 0, kOp, "heads_q",
                  "must be a multiple of heads_kv (" + std::to_string(s.heads_kv) + "), got " + std::to_string(s.heads_q));
  // 32-bit row indices inside the kernel.
  detail::require(s.seq_q >= 0 && s.seq_q < (std::int64_t(1) << 30), kOp, "seq_q",
                  "must be in [0, 2^30), got " + std::to_string(s.seq_q));
  detail::require(s.seq_k >= 0 && s.seq_k < (std::int64_t(1) << 30), kOp, "seq_k",
                  "must be in [0, 2^30), got " + std::to_string(s.seq_k));
  detail::require(std::isfinite(scale), kOp, "scale", "must be finite");
  detail::require(backend == AttentionBackend::kAuto || backend == AttentionBackend::kSm80 ||
                      backend == AttentionBackend::kSm90,
                  kOp, "backend", "must be kAuto, kSm80 or kSm90, got " + std::to_string(int(backend)));
  if (s.batch == 0 || s.seq_q == 0) return;
  const std::int64_t n = s.batch * s.heads_q * s.seq_q * s.head_dim;
  detail::require_device_pointer(q, n, kOp, "q");
  detail::require_device_pointer(k, s.seq_k, kOp, "k");
  detail::require_device_pointer(v, s.seq_k, kOp, "v");
  detail::require_device_pointer(out, n, kOp, "out");
  detail::require(is_aligned(q) && is_aligned(out) && (s.seq_k == 0 || (is_aligned(k) && is_aligned(v))), kOp,
                  !is_aligned(q) ? "q" : !is_aligned(out) ? "out" : !is_aligned(k) ? "k" : "v",
                  "must be 16-byte aligned");
  detail::require_element_aligned(lse, sizeof(float), kOp, "lse");
  require_strides(s.q_stride, "q");
  require_strides(s.k_stride, "k");
  require_strides(s.v_stride, "v");
  require_strides(s.o_stride, "out");

  attention::Params p{q, k, v, out, lse, s, causal, scale};
  launch(p, dtype, backend, stream);
}

}  // namespace flashkernel
